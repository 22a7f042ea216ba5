// cli/main.cpp: the `hamu` command: dispatches to a subcommand and maps errors to exit codes
// (2: bad usage or input, 1: runtime failure), each as one line on stderr.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "cli/common.h"
#include "engine/collectives.h"
#include "engine/error.h"
#include "engine/interrupt.h"

namespace {

const char* kUsage =
    "usage: hamu <command> [flags]   (hamu <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  train      train the original (full) or retrained (retain-only) model\n"
    "  eval       accuracy, loss, entropy and membership AUCs on forget/retain/test\n"
    "  unlearn    make a trained model forget a split (HAMU-Q/U or a baseline)\n"
    "  hardness   per-sample forget x retain gradient similarity: how hard is this forget set?\n"
    "  compare    several unlearning methods from one original, one table and one plot\n"
    "  generate   a language model's greedy answers to questions, in the training prompt template\n";

int run(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version") {
    std::printf("hamu %s\n", hamu::cli::kVersion);
    return 0;
  }
  hamu::install_interrupt_handler();
  try {
    // Under mpirun every rank must run the same command (engine/collectives.h).
    std::string line;
    for (int i = 1; i < argc; ++i) line += std::string(argv[i]) + '\0';
    hamu::check_same_on_all_ranks(hamu::world(), "command line", hamu::hash_string(line));
    if (cmd == "train") return hamu::cli::cmd_train(argc - 2, argv + 2);
    if (cmd == "eval") return hamu::cli::cmd_eval(argc - 2, argv + 2);
    if (cmd == "unlearn") return hamu::cli::cmd_unlearn(argc - 2, argv + 2);
    if (cmd == "hardness") return hamu::cli::cmd_hardness(argc - 2, argv + 2);
    if (cmd == "compare") return hamu::cli::cmd_compare(argc - 2, argv + 2);
    if (cmd == "generate") return hamu::cli::cmd_generate(argc - 2, argv + 2);
    std::fprintf(stderr, "hamu: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const hamu::Interrupted& e) {  // Ctrl-C, honoured between batches or steps
    std::fprintf(hamu::error_stream(), "\n%shamu %s: %s\n", hamu::rank_prefix().c_str(), cmd.c_str(), e.what());
    return 130;
  } catch (const hamu::InputError& e) {
    std::fprintf(hamu::error_stream(), "%shamu %s: error: %s\n", hamu::rank_prefix().c_str(), cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(hamu::error_stream(), "%shamu %s: failed: %s\n", hamu::rank_prefix().c_str(), cmd.c_str(), e.what());
    return 1;
  }
}

// OpenMP waiting on a shared machine. libgomp reads OMP_WAIT_POLICY once, when it is loaded (before
// main); unset, a thread that reaches a barrier spins for up to 300,000 iterations before sleeping.
// On idle cores that saves a wake-up, but when other jobs keep the cores busy a spinning thread burns
// the time slice its descheduled sibling needs, and every parallel region waits for that sibling:
// bench_unlearn_step (resnet20, 2 threads, load average ~11 on 2 cores) took 7.1-9.3 s per step with
// the default against 1.0-1.6 s with PASSIVE (bench/RESULTS.md, "Threads under load"). So unless the
// user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), hamu re-executes itself once with
// OMP_WAIT_POLICY=PASSIVE; if that exec fails (no /proc), it runs on with the runtime's default.
void prefer_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  ::unsetenv("OMP_WAIT_POLICY");
}

}  // namespace

// Under mpirun: one process per rank; rank 0 prints and writes (engine/collectives.h).
int main(int argc, char** argv) {
  prefer_passive_openmp_waits(argv);
  hamu::ProcessGroupScope group;
  return group.finish(run(argc, argv));
}
