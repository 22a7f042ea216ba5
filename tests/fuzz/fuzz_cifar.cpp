// tests/fuzz/fuzz_cifar.cpp: a CIFAR-10 binary batch file -> read_cifar10_file.
#include "loaders/dataset.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(cifar) {
  const std::string path = hamu::fuzz::write_scratch("data_batch_1.bin", data, size);
  hamu::ImageDataset ds;
  ds.c = 3;
  ds.h = ds.w = 32;
  ds.num_classes = 10;
  ds.class_names = hamu::cifar10_class_names();
  hamu::read_cifar10_file(path, ds);
  ds.check_consistent();
}
