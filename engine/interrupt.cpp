// engine/interrupt.cpp: the SIGINT flag (see interrupt.h).
#include "engine/interrupt.h"

#include <csignal>

namespace hamu {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);  // the next Ctrl-C kills at once
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress resume; loops see the flag at their next check
  sigaction(SIGINT, &sa, nullptr);
}

bool interrupt_requested() { return g_interrupted != 0; }

void throw_if_interrupted() {
  if (g_interrupted) throw Interrupted();
}

}  // namespace hamu
