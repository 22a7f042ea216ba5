// cli/cmd_stubs.cpp: TEMPORARY until the unlearning and hardness commands land.
#include "cli/commands.h"
#include "engine/error.h"

namespace hamu::cli {
int cmd_hardness(int, char**) { throw Error("not built yet"); }
int cmd_compare(int, char**) { throw Error("not built yet"); }
}  // namespace hamu::cli
