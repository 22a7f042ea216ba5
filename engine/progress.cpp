// engine/progress.cpp: the progress line's formatting and its redraw / log-line throttling.
#include "engine/progress.h"

#include "engine/interrupt.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

namespace hamu {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

namespace {

constexpr double kQuietSeconds = 1.0;   // nothing is shown for jobs shorter than this
constexpr double kTtyInterval = 0.1;    // terminal redraws
constexpr double kPlainInterval = 5.0;  // log lines
constexpr int kBarWidth = 20;

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

// "1203 img/s", "3.42 step/s", or for slow work "12.5 s/step" (easier to read than "0.08 step/s").
std::string format_rate(double rate, std::string_view unit) {
  if (!std::isfinite(rate) || rate <= 0) return std::string("- ") + std::string(unit);
  char buf[48];
  if (rate < 1) {
    std::string item(unit);
    if (item.size() > 2 && item.compare(item.size() - 2, 2, "/s") == 0) item.resize(item.size() - 2);
    std::snprintf(buf, sizeof buf, "%.1f s/%s", 1.0 / rate, item.c_str());
  } else {
    const int digits = rate < 10 ? 2 : rate < 100 ? 1 : 0;
    std::snprintf(buf, sizeof buf, "%.*f %.*s", digits, rate, int(unit.size()), unit.data());
  }
  return buf;
}

int terminal_width(FILE* f) {
  struct winsize ws {};
  if (::ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

bool Progress::disabled_by_env() {
  const char* v = std::getenv("HAMU_NO_PROGRESS");
  return v && *v && std::string_view(v) != "0";
}

Progress::Progress(int64_t total, std::string label, std::string unit)
    : Progress(total, std::move(label), std::move(unit), Options{}) {}

Progress::Progress(int64_t total, std::string label, std::string unit, Options options)
    : total_(total), label_(std::move(label)), unit_(std::move(unit)), opt_(std::move(options)) {
  out_ = opt_.out ? opt_.out : stderr;
  if (disabled_by_env()) opt_.mode = Mode::off;
  if (opt_.mode == Mode::automatic) opt_.mode = ::isatty(fileno(out_)) ? Mode::tty : Mode::plain;
  start_ = last_draw_ = now();
}

Progress::~Progress() {
  if (drawn_ && !finished_ && opt_.mode == Mode::tty) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

double Progress::now() const { return opt_.now ? opt_.now() : now_s(); }

void Progress::update(int64_t done, std::string_view status) {
  throw_if_interrupted();  // every long loop drives a bar: Ctrl-C is honoured between its batches
  done_ = done;
  status_.assign(status);
  if (opt_.mode == Mode::off || finished_) return;
  const double t = now();
  if (t - start_ < kQuietSeconds) return;
  // A terminal shows the line as soon as the quiet second is over; a log's first line comes after
  // one plain interval.
  const bool tty = opt_.mode == Mode::tty;
  if ((tty && !drawn_) || t - last_draw_ >= (tty ? kTtyInterval : kPlainInterval)) draw(false);
}

void Progress::finish(std::string_view status) {
  if (finished_) return;
  if (!status.empty()) status_.assign(status);
  if (opt_.mode != Mode::off && (drawn_ || now() - start_ >= kQuietSeconds)) draw(true);
  finished_ = true;
}

void Progress::draw(bool final) {
  const double t = now();
  last_draw_ = t;
  std::string line;
  if (opt_.mode == Mode::tty) {
    // A line wider than the terminal wraps and '\r' no longer returns to its start: drop the bar
    // first, then cut the end.
    const size_t width = size_t(std::max(terminal_width(out_) - 1, 10));
    line = format_line(label_, done_, total_, t - start_, unit_, status_, kBarWidth, final);
    if (line.size() > width) line = format_line(label_, done_, total_, t - start_, unit_, status_, 0, final);
    if (line.size() > width) line.resize(width);
    const size_t len = line.size();
    if (len < last_len_) line.append(last_len_ - len, ' ');
    last_len_ = len;
    line.insert(line.begin(), '\r');
    if (final) line += '\n';
  } else {
    line = format_line(label_, done_, total_, t - start_, unit_, status_, 0, final) + "\n";
  }
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
  drawn_ = true;
}

std::string Progress::format_line(std::string_view label, int64_t done, int64_t total, double elapsed_s,
                                  std::string_view unit, std::string_view status, int bar_width, bool final) {
  std::string s(label);
  const bool known = total > 0;
  const double frac = known ? std::clamp(double(done) / double(total), 0.0, 1.0) : 0.0;
  if (known) {
    char pct[16];
    std::snprintf(pct, sizeof pct, " %3d%%", int(frac * 100));
    s += pct;
    if (bar_width > 0) {
      const int filled = int(frac * bar_width);
      s += " [";
      s.append(size_t(filled), '=');
      if (filled < bar_width) {
        s += '>';
        s.append(size_t(bar_width - filled - 1), ' ');
      }
      s += ']';
    }
    s += " " + std::to_string(done) + "/" + std::to_string(total);
  } else {
    s += " " + std::to_string(done);
  }
  const double rate = elapsed_s > 0 ? double(done) / elapsed_s : 0.0;
  s += "  " + format_rate(rate, unit);
  s += "  " + format_duration(elapsed_s);
  if (!final && known && done < total) s += " eta " + (rate > 0 ? format_duration(double(std::max<int64_t>(total - done, 0)) / rate) : std::string("?"));
  if (!status.empty()) {
    s += "  ";
    s += status;
  }
  return s;
}

}  // namespace hamu
