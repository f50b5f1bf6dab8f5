// Python entry point of dacer2._C. The ops register themselves with the dispatcher when this shared
// library is loaded (TORCH_LIBRARY_IMPL in ops.cpp); the module itself exposes nothing.
#include <Python.h>

static struct PyModuleDef dacer2_module = {PyModuleDef_HEAD_INIT, "_C", "dacer2 CPU kernels (registered as torch.ops.dacer2.*)", -1,
                                           nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&dacer2_module); }
