// engine/progress.h: a progress line on stderr (label, done/total, bar, rate, elapsed, ETA, status).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace hamu {

// Seconds on the monotonic clock (steady_clock): the one timer every loop, bench and report uses.
double now_s();

// Progress bar(n_batches, "train 1/5", "img/s"); bar.update(i + 1, "loss 0.412"); bar.finish("acc 0.91");
//
// On a terminal one line is redrawn with '\r' at most 10 times a second; elsewhere (CI, pipes,
// files) a plain line is printed at most every 5 s, so logs stay readable. A job that finishes
// within its first second prints nothing at all, not even the final line: quick commands and
// tests stay quiet. Otherwise finish() prints the final line (average rate and total time).
// HAMU_NO_PROGRESS=1 (any value but empty or 0) turns every bar off. Not thread-safe: one caller
// drives one bar.
class Progress {
 public:
  enum class Mode { automatic, tty, plain, off };
  struct Options {
    Mode mode = Mode::automatic;  // automatic: tty when `out` is a terminal, else plain
    FILE* out = nullptr;          // nullptr: stderr
    std::function<double()> now;  // seconds on a monotonic clock; tests inject a fake one
  };

  // total <= 0: unknown (no bar, percentage or ETA). `unit` names the rate, e.g. "img/s", "step/s".
  Progress(int64_t total, std::string label, std::string unit = "it/s");
  Progress(int64_t total, std::string label, std::string unit, Options options);
  ~Progress();  // ends a drawn terminal line when finish() was never reached (an exception)
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(int64_t done, std::string_view status = {});
  void finish(std::string_view status = {});

  // One line of output (pure; exposed for tests). bar_width 0 leaves the bar out; final drops the ETA.
  static std::string format_line(std::string_view label, int64_t done, int64_t total, double elapsed_s,
                                 std::string_view unit, std::string_view status, int bar_width, bool final);
  static bool disabled_by_env();

 private:
  void draw(bool final);
  double now() const;

  int64_t total_;
  std::string label_, unit_, status_;
  Options opt_;
  FILE* out_;
  int64_t done_ = 0;
  double start_ = 0, last_draw_ = 0;
  size_t last_len_ = 0;  // length of the line on screen, to blank a shorter redraw
  bool drawn_ = false, finished_ = false;
};

}  // namespace hamu
