// tests/main.cpp: the doctest runner for every CPU (and, with CUDA=1, GPU parity) test.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
