// cli/args.cpp: the flag parser.
#include "cli/args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "engine/error.h"

namespace hamu::cli {

Args::Args(std::string command, std::string synopsis, std::vector<Flag> flags)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), flags_(std::move(flags)) {
  flags_.push_back({"--help", "", "show this help and exit", ""});
}

namespace {

// Levenshtein distance (small strings: flag names).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string Args::nearest_flag(const std::string& name) const {
  // A transposition or a typo or two: at most a third of the name may differ.
  std::string best;
  size_t best_d = std::max<size_t>(2, name.size() / 3) + 1;
  for (const Flag& f : flags_) {
    const size_t d = edit_distance(name, f.name);
    if (d < best_d) best_d = d, best = f.name;
  }
  return best;
}

const Flag& Args::find(const std::string& name) const {
  for (const Flag& f : flags_)
    if (f.name == name) return f;
  throw Error("internal: flag " + name + " is not declared for hamu " + command_);
}

bool Args::parse(int argc, char** argv) {
  argv_.assign(argv, argv + argc);
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(usage().c_str(), stdout);
      return false;
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags_)
      if (f.name == a) flag = &f;
    if (!flag) {
      if (auto r = refused_.find(a); r != refused_.end()) throw InputError(a + ": " + r->second);
      if (a.rfind("-", 0) != 0) throw InputError("unexpected argument '" + a + "' (flags start with --)");
      const std::string near = nearest_flag(a);
      throw InputError("unknown flag " + a + (near.empty() ? "" : " (did you mean " + near + "?)") + " (see hamu " +
                       command_ + " --help)");
    }
    if (values_.count(a)) throw InputError(a + " given twice");
    if (flag->value_name.empty()) {
      if (has_inline) throw InputError(std::string(a).append(" takes no value"));
      values_.insert_or_assign(a, std::string("1"));
      continue;
    }
    if (!has_inline) {
      if (i + 1 >= argc) throw InputError(a + " needs a value (" + flag->value_name + ")");
      value = argv[++i];
    }
    values_[a] = value;
  }
  if (values_.count("--config")) apply_config(values_["--config"]);
  return true;
}

namespace {
// The configuration object of a --config file (see config_file_value).
Json config_object(const std::string& path) {
  Json j = load_json(path);
  if (const Json* p = j.find("provenance"); p && p->is_object() && p->find("config")) return p->at("config");
  if (const Json* c = j.find("config"); c && c->is_object()) return *c;
  if (!j.is_object()) throw InputError("--config: " + path + " holds no configuration object");
  return j;
}
}  // namespace

std::string config_file_value(const std::string& path, const std::string& flag) {
  const Json cfg = config_object(path);
  const Json* v = cfg.find(flag);
  if (!v || v->is_null()) return "";
  if (v->is_string()) return v->as_string();
  if (v->is_bool()) return v->as_bool() ? "1" : "";
  return v->dump();
}

void Args::apply_config(const std::string& path) {
  const Json j = config_object(path);
  const Json* cfg = &j;
  // (Messages built with append: GCC 12's -Wrestrict misfires on literal + string chains here.)
  auto bad = [&](const std::string& key, const char* what) {
    std::string m = "--config: ";
    m.append(key).append(" in ").append(path).append(what);
    return InputError(m);
  };
  for (const auto& [key, value] : cfg->members()) {
    if (key == "--config" || key == "--help" || values_.count(key)) continue;  // the command line wins
    const Flag* flag = nullptr;
    for (const Flag& f : flags_)
      if (f.name == key) flag = &f;
    if (!flag) continue;  // another command's flag (a compare report replayed by unlearn, say)
    if (flag->value_name.empty()) {
      if (!value.is_bool()) throw bad(key, " must be true or false");
      if (value.as_bool()) values_.insert_or_assign(key, std::string("1"));
    } else if (value.is_string()) {
      values_[key] = value.as_string();
    } else if (value.is_number()) {
      values_[key] = value.dump();
    } else if (!value.is_null()) {
      throw bad(key, " must be a string or a number");
    }
  }
}

std::string Args::command_line() const {
  std::string s = "hamu " + command_;
  for (const std::string& a : argv_) {
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos;
    if (plain) {
      s += " " + a;
    } else {
      std::string q = " '";
      for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      s += q + "'";
    }
  }
  return s;
}

Json Args::resolved_config() const {
  Json j = Json::object();
  for (const Flag& f : flags_) {
    if (f.name == "--help" || f.name == "--config") continue;
    auto r = resolved_.find(f.name);
    auto v = values_.find(f.name);
    if (f.value_name.empty()) {
      j.set(f.name, Json(v != values_.end()));
    } else if (r != resolved_.end()) {
      j.set(f.name, Json(r->second));
    } else if (v != values_.end()) {
      j.set(f.name, Json(v->second));
    } else if (!f.default_value.empty() && f.default_value.find(' ') == std::string::npos) {
      j.set(f.name, Json(f.default_value));  // a literal default (descriptions like "all cores" are resolved by the command)
    } else {
      j.set(f.name, Json(nullptr));  // unset, no default: the command's own choice (e.g. the checkpoint's split)
    }
  }
  return j;
}

void Args::set_resolved(const std::string& name, const std::string& value) const {
  find(name);
  resolved_[name] = value;
}

namespace {

// "  name" padded to the help column (or the help on the next line when the name is long).
std::string help_left(const std::string& name) {
  std::string left = "  " + name;
  if (left.size() < 28) left.resize(28, ' ');
  else left += "\n" + std::string(28, ' ');
  return left;
}

}  // namespace

std::string Args::usage() const {
  std::string s = "usage: hamu " + command_ + " " + synopsis_ + "\n\nflags:\n";
  for (const Flag& f : flags_) {
    s += help_left(f.name + (f.value_name.empty() ? "" : " " + f.value_name)) + f.help;
    if (!f.default_value.empty()) s += " (default " + f.default_value + ")";
    s += "\n";
  }
  return s + sections_;
}

void Args::add_help_section(const std::string& title, const std::vector<std::pair<std::string, std::string>>& items) {
  sections_ += "\n" + title + ":\n";
  for (const auto& [name, help] : items) sections_ += help_left(name) + help + "\n";
}

void Args::refuse(const std::string& name, const std::string& why) { refused_[name] = why; }

bool Args::has(const std::string& name) const {
  find(name);
  return values_.count(name) > 0;
}

std::string Args::str(const std::string& name) const {
  const Flag& f = find(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  if (!f.default_value.empty()) return f.default_value;
  throw InputError("missing " + name);
}

std::string Args::str_or(const std::string& name, const std::string& fallback) const {
  find(name);
  auto it = values_.find(name);
  return it != values_.end() ? it->second : fallback;
}

bool Args::on(const std::string& name) const {
  find(name);
  return values_.count(name) > 0;
}

std::string Args::required(const std::string& name) const {
  find(name);
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) throw InputError("missing " + name + " (see hamu " + command_ + " --help)");
  return it->second;
}

double Args::number(const std::string& name) const {
  const std::string v = str(name);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x))
    throw InputError(name + ": '" + v + "' is not a finite number");
  return x;
}

int64_t Args::integer(const std::string& name) const {
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || end != v.c_str() + v.size()) throw InputError(name + ": '" + v + "' is not an integer");
  if (errno == ERANGE) throw InputError(name + ": '" + v + "' is out of range (at most 9223372036854775807)");
  return x;
}

}  // namespace hamu::cli
