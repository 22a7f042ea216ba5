// unlearn/method_registry.h: the methods by name. Each method's file registers its object once, from a
// static initialiser:
//
//   const MethodRegistration kRegistration(std::make_unique<MyMethod>(), 95);  // 95: its place in listings
//
// and from then on `--method`, `--methods`, `--help`, validation and the runner know it. Listings are in
// rank order (ties by name): hamu-q, hamu-u, ft, ga, gdiff, kl, scrub, npo, gru, pcgrad.
//
// Linking: a static initialiser in a member of libhamu.a runs only if the linker pulls that member in,
// and nothing references a method's object file by symbol. The Makefile therefore links libhamu.a with
// --whole-archive (every binary: hamu, hamu_tests, the benches), so adding a method stays one new file;
// an empty registry at lookup time says so instead of failing obscurely.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "unlearn/method.h"

namespace hamu {

struct MethodRegistration {
  // Aborts the program (a build error, caught by the first test run) on a repeated name.
  MethodRegistration(std::unique_ptr<Method> method, int rank);
};

// The method named `name`; InputError "--method: unknown method 'x' (choose hamu-q, hamu-u, ...)".
const Method& parse_method(const std::string& name);
const Method* find_method(const std::string& name);  // nullptr when unknown
const char* method_name(const Method& m);
const std::vector<std::string>& method_names();      // in listing order
std::vector<const Method*> registered_methods();     // in listing order
std::string method_list();                           // "hamu-q, hamu-u, ft, ..." (for help texts)

}  // namespace hamu
