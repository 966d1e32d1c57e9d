// pointmap._C: the compiled ops. CUDA functions are registered only when built with CUDA.
#include <torch/extension.h>

torch::Tensor fps_cpu(torch::Tensor xyz, int64_t n);
#ifdef POINTMAP_WITH_CUDA
torch::Tensor fps_cuda(torch::Tensor xyz, int64_t n);
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fps_cpu", &fps_cpu, "farthest point sampling (CPU)");
#ifdef POINTMAP_WITH_CUDA
  m.def("fps_cuda", &fps_cuda, "farthest point sampling (CUDA)");
#endif
  m.attr("with_cuda") = py::bool_(
#ifdef POINTMAP_WITH_CUDA
      true
#else
      false
#endif
  );
}
