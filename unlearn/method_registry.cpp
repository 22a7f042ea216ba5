// unlearn/method_registry.cpp: the registry of unlearning methods (filled by static initialisers).
#include "unlearn/method_registry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace hamu {
namespace {

struct Entry {
  int rank;
  std::unique_ptr<Method> method;
};

struct Registry {
  std::vector<Entry> entries;       // in listing order
  std::vector<std::string> names;   // the same order
};

// Built on first use: registrations run from other translation units' static initialisers, in an
// order the language leaves open, so the registry cannot be a namespace-scope object.
Registry& registry() {
  static Registry r;
  return r;
}

const Registry& filled_registry() {
  const Registry& r = registry();
  if (r.entries.empty())
    throw Error("no unlearning methods are registered: the binary was linked without --whole-archive around "
                "libhamu.a, so the linker dropped unlearn/methods/*.o (see unlearn/method_registry.h)");
  return r;
}

}  // namespace

MethodRegistration::MethodRegistration(std::unique_ptr<Method> method, int rank) {
  Registry& r = registry();
  for (const Entry& e : r.entries)
    if (e.method->name() == method->name()) {
      std::fprintf(stderr, "hamu: two unlearning methods are registered as '%s'\n", method->name().c_str());
      std::abort();
    }
  auto before = [&](const Entry& e) { return e.rank < rank || (e.rank == rank && e.method->name() < method->name()); };
  const auto at = std::find_if_not(r.entries.begin(), r.entries.end(), before);
  r.names.insert(r.names.begin() + (at - r.entries.begin()), method->name());
  r.entries.insert(at, Entry{rank, std::move(method)});
}

const Method* find_method(const std::string& name) {
  for (const Entry& e : filled_registry().entries)
    if (e.method->name() == name) return e.method.get();
  return nullptr;
}

const Method& parse_method(const std::string& name) {
  if (const Method* m = find_method(name)) return *m;
  throw InputError("--method: unknown method '" + name + "' (choose " + method_list() + ")");
}

const Method& default_method() { return parse_method("hamu-q"); }

const char* method_name(const Method& m) { return m.name().c_str(); }

const std::vector<std::string>& method_names() { return filled_registry().names; }

std::vector<const Method*> registered_methods() {
  std::vector<const Method*> out;
  for (const Entry& e : filled_registry().entries) out.push_back(e.method.get());
  return out;
}

std::string method_list() {
  std::string all;
  for (const std::string& n : method_names()) all += (all.empty() ? "" : ", ") + n;
  return all;
}

}  // namespace hamu
