/* cuda_stub.c — lb_backend_cuda_open for builds without nvcc. */
#ifndef LB_HAVE_CUDA
#include "backend.h"

int lb_backend_cuda_open(struct lb_backend *be, int device, struct lb_err *err)
{
    (void)be;
    return lb_err_set(err, LB_E_UNSUPPORTED, "this lorabatch was built without CUDA (no nvcc at build time); device %d unavailable", device);
}
#else
typedef int lb_cuda_stub_unused;
#endif
