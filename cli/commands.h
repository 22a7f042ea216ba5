// cli/commands.h: the subcommands of `hamu` (each parses its own flags; returns the exit code).
#pragma once

namespace hamu::cli {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_unlearn(int argc, char** argv);
int cmd_hardness(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_generate(int argc, char** argv);

// The text paths (cli/cmd_text.cpp), entered by cmd_train / cmd_unlearn when --data names text or --model
// is a Hugging Face directory (cli/text_setup.h: is_text_command).
int cmd_train_text(int argc, char** argv);
int cmd_unlearn_text(int argc, char** argv);
int cmd_hardness_text(int argc, char** argv);  // cli/cmd_hardness_text.cpp

}  // namespace hamu::cli
