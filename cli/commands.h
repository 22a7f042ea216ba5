// cli/commands.h: the subcommands of `hamu` (each parses its own flags; returns the exit code).
#pragma once

namespace hamu::cli {

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_unlearn(int argc, char** argv);
int cmd_hardness(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_generate(int argc, char** argv);

}  // namespace hamu::cli
