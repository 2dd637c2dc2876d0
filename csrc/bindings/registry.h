// Each bind_<area>.cpp registers itself with PANGU_REGISTER_BINDINGS(area, fn); module.cpp calls
// every registered function once, in name order, so a new part needs no edit to module.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>
#include <string>
#include <vector>

namespace pangu::bindings {

using BindFn = void (*)(pybind11::module_& m);

struct Registration {
  std::string name;
  BindFn fn;
};

inline std::vector<Registration>& registrations() {
  static std::vector<Registration> all;
  return all;
}

struct Registrar {
  Registrar(const char* name, BindFn fn) { registrations().push_back({name, fn}); }
};

}  // namespace pangu::bindings

#define PANGU_REGISTER_BINDINGS(area, fn) \
  static ::pangu::bindings::Registrar pangu_registrar_##area(#area, fn)
