// cli/args.h: flag parsing for the hamu subcommands (--name value, --switch, --help), with one clear
// error naming the flag for anything unknown, missing or malformed.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/json.h"

namespace hamu::cli {

struct Flag {
  std::string name;        // "--lr"
  std::string value_name;  // "X"; empty for a switch
  std::string help;
  std::string default_value;  // shown in --help; empty = none
};

// The value `flag` has in a --config FILE (a report's provenance.config, a "config" object or a bare
// {"--flag": value} object; numbers as written, switches "1"), "" when absent or null. Read before a command
// parses its flags: what the file records decides, like the command line, which path handles the command.
std::string config_file_value(const std::string& path, const std::string& flag);

class Args {
 public:
  Args(std::string command, std::string synopsis, std::vector<Flag> flags);
  // Returns false when --help was asked for (usage already printed on stdout).
  bool parse(int argc, char** argv);
  std::string usage() const;
  // A titled list printed after the flags in --help, e.g. the methods with one line each.
  void add_help_section(const std::string& title, const std::vector<std::pair<std::string, std::string>>& items);
  // A flag another form of the command takes but this one does not: parse() refuses it with `why` (not
  // "unknown flag"), e.g. --cuda-graph on a language model. Not listed in --help.
  void refuse(const std::string& name, const std::string& why);

  bool has(const std::string& name) const;
  std::string str(const std::string& name) const;  // the value or the default; InputError when neither
  std::string str_or(const std::string& name, const std::string& fallback) const;
  bool on(const std::string& name) const;  // switch given
  double number(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  // The value of a required flag (InputError "missing --out" when absent).
  std::string required(const std::string& name) const;

  // Provenance (cli/provenance.h): "hamu CMD ARGS..." as given, and every flag's effective value as
  // {"--flag": "value"} (switches true; defaults made explicit; a value the command resolved itself,
  // e.g. the thread count, as set_resolved recorded it). `--config FILE` (a report's
  // provenance.config, or a bare {"--flag": value} object) fills in every flag not given here.
  std::string command_line() const;
  Json resolved_config() const;
  void set_resolved(const std::string& name, const std::string& value) const;

 private:
  const Flag& find(const std::string& name) const;
  std::string nearest_flag(const std::string& name) const;  // closest declared flag, or empty
  std::string command_, synopsis_, sections_;
  std::vector<Flag> flags_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> refused_;  // flag -> why (refuse())
  std::vector<std::string> argv_;
  mutable std::map<std::string, std::string> resolved_;
  void apply_config(const std::string& path);
};

}  // namespace hamu::cli
