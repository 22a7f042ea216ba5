// tests/test_progress.cpp: progress line formatting and when (not) to print, on a fake clock.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <cstdio>
#include <string>

#include "engine/progress.h"

using namespace hamu;

namespace {

// Everything written to a temporary FILE*.
std::string contents(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fseek(f, 0, SEEK_END);
  return s;
}

struct FakeRun {
  double t = 100.0;
  FILE* out = std::tmpfile();
  ~FakeRun() { std::fclose(out); }
  Progress::Options options(Progress::Mode mode) {
    Progress::Options o;
    o.mode = mode;
    o.out = out;
    o.now = [this] { return t; };
    return o;
  }
};

size_t count(const std::string& s, char c) {
  size_t n = 0;
  for (char x : s) n += x == c;
  return n;
}

}  // namespace

TEST_CASE("progress: line format") {
  CHECK(Progress::format_line("train 1/5", 312, 1875, 12.0, "img/s", "loss 0.412", 20, false) ==
        "train 1/5  16% [===>                ] 312/1875  26.0 img/s  0:12 eta 1:00  loss 0.412");
  CHECK(Progress::format_line("train 1/5", 1875, 1875, 47.0, "img/s", "", 0, true) ==
        "train 1/5 100% 1875/1875  39.9 img/s  0:47");
  CHECK(Progress::format_line("eval", 3, 0, 30.0, "step/s", "", 0, false) == "eval 3  10.0 s/step  0:30");
  CHECK(Progress::format_line("x", 0, 10, 0.0, "it/s", "", 10, false) == "x   0% [>         ] 0/10  - it/s  0:00 eta ?");
  CHECK(Progress::format_line("x", 50000, 100000, 4000.0, "it/s", "", 0, false) == "x  50% 50000/100000  12.5 it/s  1:06:40 eta 1:06:40");
  // At 100% before finish() (the last batch done, the closing evaluation still running): no "eta 0:00".
  CHECK(Progress::format_line("x", 10, 10, 5.0, "it/s", "loss 1", 10, false) == "x 100% [==========] 10/10  2.00 it/s  0:05  loss 1");
}

TEST_CASE("progress: a job under a second prints nothing") {
  FakeRun run;
  {
    Progress bar(100, "quick", "it/s", run.options(Progress::Mode::tty));
    for (int i = 1; i <= 100; ++i) {
      run.t += 0.009;
      bar.update(i);
    }
    bar.finish("done");
  }
  CHECK(contents(run.out).empty());
}

TEST_CASE("progress: terminal redraws at most ten times a second") {
  FakeRun run;
  {
    Progress bar(1000, "train", "step/s", run.options(Progress::Mode::tty));
    for (int i = 1; i <= 1000; ++i) {  // 3 s in 3 ms steps
      run.t += 0.003;
      bar.update(i, "loss 1.0");
    }
    bar.finish("acc 0.9");
  }
  const std::string out = contents(run.out);
  // Drawn from the first second on: about 2 s / 0.1 s redraws plus the final line.
  CHECK(count(out, '\r') >= 19);
  CHECK(count(out, '\r') <= 22);
  CHECK(count(out, '\n') == 1);
  CHECK(out.find("train 100% [====================] 1000/1000") != std::string::npos);
  CHECK(out.find("acc 0.9") != std::string::npos);
  CHECK(out.back() == '\n');
}

TEST_CASE("progress: logs get a plain line every five seconds and the final line") {
  FakeRun run;
  {
    Progress bar(100, "unlearn", "step/s", run.options(Progress::Mode::plain));
    for (int i = 1; i <= 100; ++i) {  // 12.5 s
      run.t += 0.125;
      bar.update(i);
    }
    bar.finish();
  }
  const std::string out = contents(run.out);
  CHECK(count(out, '\r') == 0);
  CHECK(count(out, '\n') == 3);  // at 5 s, 10 s, and the end
  CHECK(out.rfind("unlearn 100% 100/100  8.00 step/s  0:13\n") != std::string::npos);
}

TEST_CASE("progress: an unfinished terminal bar ends its line; the off mode and the env switch print nothing") {
  FakeRun run;
  {
    Progress bar(10, "x", "it/s", run.options(Progress::Mode::tty));
    run.t += 2;
    bar.update(1);
  }  // as if an exception unwound past it
  const std::string out = contents(run.out);
  CHECK(out.back() == '\n');

  FakeRun quiet;
  {
    Progress bar(10, "x", "it/s", quiet.options(Progress::Mode::off));
    quiet.t += 10;
    bar.update(5);
    bar.finish();
  }
  setenv("HAMU_NO_PROGRESS", "1", 1);
  {
    Progress bar(10, "x", "it/s", quiet.options(Progress::Mode::tty));
    quiet.t += 10;
    bar.update(5);
    bar.finish();
  }
  unsetenv("HAMU_NO_PROGRESS");
  CHECK(contents(quiet.out).empty());
  CHECK_FALSE(Progress::disabled_by_env());
}
