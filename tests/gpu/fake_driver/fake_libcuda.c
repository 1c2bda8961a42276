/* tests/gpu/fake_driver: a libcuda.so.1 with none of the driver's symbols: a machine whose
 * driver is installed but unusable, for the broken_driver test. */
int ferry_fake_libcuda;
