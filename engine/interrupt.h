// engine/interrupt.h: Ctrl-C (SIGINT) as a flag that long loops check between batches and steps, so an
// interrupted run unwinds cleanly (files closed, partial outputs marked) instead of dying mid-write.
#pragma once
#include <stdexcept>
#include <string>

namespace hamu {

// Thrown by throw_if_interrupted(); the command line reports it and exits with 130 (128 + SIGINT).
// `written` says what the interrupted command left behind ("nothing written" unless a handler on the
// way up kept something, e.g. a marked partial log).
struct Interrupted : std::runtime_error {
  explicit Interrupted(const std::string& written = "nothing written")
      : std::runtime_error("interrupted, " + written) {}
};

// Installs the SIGINT handler: it only sets a flag (async-signal-safe). A second Ctrl-C while the first
// is being honoured restores the default action, so a stuck run can still be killed.
void install_interrupt_handler();
bool interrupt_requested();
// Throws Interrupted once SIGINT arrived. Call between batches or steps, never inside a parallel region.
void throw_if_interrupted();

}  // namespace hamu
