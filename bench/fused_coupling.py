"""Whether a compiled coupling would make one image faster: ``python -m bench.fused_coupling``.

One image's call is two flow passes of eight conv couplings and one fully connected coupling each. Outside its
24 convolutions a traced pass runs some 250 small operators (channel slices, concatenations, atan, exp, the
affine step, ReLUs). This compiles a throwaway C++ operator (``torch.utils.cpp_extension``: needs g++ and
ninja; not part of the product) that runs a whole GLOW coupling in one call: the subnets' layers through the
same ATen kernels the trace calls (the direct convolution kernel, addmm), the rest fused into one loop per
half, written in place. It prints, per bundled image model and with the machine's torch threads:

- the subnet convolutions' share of one pass (each timed around its call in an eager pass);
- one traced pass, forward and reverse, through the model's route and with the compiled coupling (timed in
  turn, several rounds), and the largest difference between their outputs;
- one image's privatize call (encode, noise, decode) with each, timed in turn.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial

import torch

from bench import WEIGHTS
from bench.compute import image_inputs, load, privatize_call

SOURCE = r"""
#include <ATen/ATen.h>
#include <torch/library.h>
#include <cmath>
#include <vector>

namespace {

// the three layers of a ConvSubnet / DenseSubnet, ReLU between; p[first + 2 i], p[first + 2 i + 1]: layer i
at::Tensor subnet(at::Tensor u, const std::vector<at::Tensor>& p, int64_t first) {
  for (int64_t i = 0; i < 3; ++i) {
    const at::Tensor& w = p[first + 2 * i];
    const at::Tensor& b = p[first + 2 * i + 1];
    if (u.dim() == 4) {
      int64_t k = w.size(2);
      u = at::thnn_conv2d(u, w, {k, k}, b, {1, 1}, {k / 2, k / 2});
    } else {
      u = at::addmm(b, u, w.t());
    }
    if (i < 2) u.relu_();
  }
  return u;
}

// out[:, offset:offset + k] = x * exp(s) + t, or (x - t) * exp(-s) in reverse; s = scale * atan(a[:, :k]),
// t = a[:, k:2k]; any strides
void affine(const at::Tensor& a, const at::Tensor& x, at::Tensor& out, int64_t offset, double scale, bool rev) {
  const int64_t B = x.size(0), k = x.size(1);
  const int64_t H = x.dim() == 4 ? x.size(2) : 1, W = x.dim() == 4 ? x.size(3) : 1;
  const float* ap = a.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  auto st = [](const at::Tensor& t, int d) { return t.dim() > d ? t.stride(d) : 0; };
  const int64_t ab = a.stride(0), ac = a.stride(1), ah = st(a, 2), aw = st(a, 3);
  const int64_t xb = x.stride(0), xc = x.stride(1), xh = st(x, 2), xw = st(x, 3);
  const int64_t ob = out.stride(0), oc = out.stride(1), oh = st(out, 2), ow = st(out, 3);
  const float sc = static_cast<float>(rev ? -scale : scale);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const float* here = ap + b * ab + h * ah + w * aw;
          const float s = std::exp(sc * std::atan(here[c * ac]));
          const float t = here[(k + c) * ac];
          const float v = xp[b * xb + c * xc + h * xh + w * xw];
          op[b * ob + (offset + c) * oc + h * oh + w * ow] = rev ? (v - t) * s : v * s + t;
        }
}

// FrEIA's GLOWCouplingBlock (ATAN clamp) for inference; params: subnet2's (w, b) x 3, then subnet1's
at::Tensor glow_coupling(const at::Tensor& x, const at::Tensor& c, std::vector<at::Tensor> params,
                         int64_t split1, double scale, bool rev) {
  const int64_t split2 = x.size(1) - split1;
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor x1 = x.narrow(1, 0, split1), x2 = x.narrow(1, split1, split2);
  if (!rev) {
    affine(subnet(at::cat({x2, c}, 1), params, 0), x1, out, 0, scale, false);
    affine(subnet(at::cat({out.narrow(1, 0, split1), c}, 1), params, 6), x2, out, split1, scale, false);
  } else {
    affine(subnet(at::cat({x1, c}, 1), params, 6), x2, out, split1, scale, true);
    affine(subnet(at::cat({out.narrow(1, split1, split2), c}, 1), params, 0), x1, out, 0, scale, true);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(cadp_bench, m) {
  m.def("glow_coupling(Tensor x, Tensor c, Tensor[] params, int split1, float scale, bool rev) -> Tensor",
        &glow_coupling);
}
"""


def _compiled() -> bool:
    try:
        torch.ops.cadp_bench.glow_coupling  # noqa: B018 (a lookup: raises where the operator is not registered)
    except (AttributeError, RuntimeError):
        return False
    return True


def compile_operator() -> float:
    """Compile the operator (seconds taken; 0 where this process has it already); SystemExit(2) where no
    compiler is at hand."""
    from torch.utils.cpp_extension import load_inline

    if _compiled():  # a namespace registers once per process
        return 0.0

    missing = [tool for tool in ("g++", "ninja") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)} on PATH to compile the operator", file=sys.stderr)
        raise SystemExit(2)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as build:
        load_inline("cadp_bench_coupling", cpp_sources=[SOURCE], is_python_module=False, build_directory=build,
                    extra_cflags=["-O3"])
    return time.perf_counter() - started


def _subnet_parameters(module) -> list[torch.Tensor]:
    layers = [layer for subnet in (module.subnet2, module.subnet1) for layer in subnet
              if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]
    if len(layers) != 6 or any(isinstance(layer, torch.nn.Conv2d) and (layer.stride != (1, 1) or layer.groups != 1
                                                                       or layer.padding[0] != layer.kernel_size[0] // 2)
                               for layer in layers):
        raise SystemExit("the operator computes the bundled subnets' layout only (three layers, stride 1, 'same')")
    return [tensor for layer in layers for tensor in (layer.weight, layer.bias)]


def compiled_coupling(module, x, c, rev, jac=False, small_batch=False, packs=None):
    """``cadp.models._coupling``'s signature, through the compiled operator (inference only; its convolutions in
    the direct kernel, not through ``packs``)."""
    if jac or len(c) != 1:
        raise SystemExit("the compiled coupling is for inference passes with one condition")
    parameters = getattr(module, "_bench_parameters", None)
    if parameters is None:
        parameters = module._bench_parameters = _subnet_parameters(module)
    from cadp.models import ATAN_SCALE

    return torch.ops.cadp_bench.glow_coupling(x, c[0], parameters, module.split_len1, module.clamp * ATAN_SCALE,
                                              rev), None


def p50_ms(call, calls: int) -> float:
    for _ in range(10):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def conv_share(loaded, pixels, labels, calls: int) -> tuple[float, float]:
    """(p50 ms of one eager forward pass, ms of it inside the subnet convolutions), the convolutions in the direct
    kernel (the passes' route for few images before the twenty-seventh round, which the compiled coupling calls)."""
    from cadp import models

    direct = models._THNN_CONV2D
    spent = defaultdict(list)

    def timed(*args):
        started = time.perf_counter()
        out = direct(*args)
        spent[id(args[1])].append(time.perf_counter() - started)
        return out

    model = loaded.model
    logit, _ = model._to_logit(pixels, None, log_det=False)
    conditions = model.condition(labels)
    eager = models._FlowPass(model.inn, rev=False, small_batch=True)
    eager.packs = None  # no oneDNN copies: the direct kernel, timed
    models._THNN_CONV2D = timed
    try:
        whole = p50_ms(lambda: eager(logit, *conditions), calls)
    finally:
        models._THNN_CONV2D = direct
    return whole, sum(statistics.median(times) for times in spent.values()) * 1e3


def compare_model(name: str, rounds: int, calls: int) -> list[str]:
    """The compiled coupling against the passes for one image with oneDNN copies of the weights (the route of
    the eighteenth round: the models' passes are not fused by oneDNN Graph here, which would not call
    ``_coupling``'s route for few images)."""
    from cadp import models

    device = torch.device("cpu")
    own, fused = load(WEIGHTS / name, device), load(WEIGHTS / name, device)
    own.model._traced.fuse = fused.model._traced.fuse = False
    pixels, labels, _ = image_inputs(own.config, 1)
    lines = [f"{name}, one image"]
    with torch.inference_mode():
        whole, convs = conv_share(own, pixels, labels, calls)
        lines.append(f"- eager forward pass {whole:.2f} ms, of it in the 24 subnet convolutions {convs:.2f} ms "
                     f"({convs / whole:.0%})")
        passes = {}
        for label, loaded in (("own", own), ("fused", fused)):
            model = loaded.model
            logit, _ = model._to_logit(pixels, None, log_det=False)
            conditions = model.condition(labels)
            original = models._coupling
            if label == "fused":
                models._coupling = compiled_coupling
            try:  # the traces are made on first use: the fused model's record the compiled operator
                latent = model._flow(logit, conditions, rev=False)
                back = model._flow(latent, conditions, rev=True)
            finally:
                models._coupling = original
            passes[label] = (model, logit, conditions, latent, back)
        (_, _, _, latent, back), (_, _, _, fused_latent, fused_back) = passes["own"], passes["fused"]
        lines.append(f"- largest difference, compiled against own: latent {float((fused_latent - latent).abs().max()):.1e}, "
                     f"reverse pass {float((fused_back - back).abs().max()):.1e}")
        calls_of = {label: privatize_call(loaded, 1)[0] for label, loaded in (("own", own), ("fused", fused))}
        times = defaultdict(list)
        for _ in range(rounds):
            for label, (model, logit, conditions, latent, _) in passes.items():
                times[label, "forward"].append(p50_ms(partial(model._flow, logit, conditions, rev=False), calls))
                times[label, "reverse"].append(p50_ms(partial(model._flow, latent, conditions, rev=True), calls))
                times[label, "call"].append(p50_ms(calls_of[label], calls))
    lines += ["", "| p50 ms per round | model's own route | compiled coupling | compiled / own (median) |",
              "|---|---|---|---|"]
    for part in ("forward", "reverse", "call"):
        own_times, fused_times = times["own", part], times["fused", part]
        ratio = statistics.median(f / o for f, o in zip(fused_times, own_times))
        row = {"forward": "traced forward pass", "reverse": "traced reverse pass",
               "call": "privatize call (encode, noise, decode)"}[part]
        lines.append(f"| {row} | {', '.join(f'{t:.2f}' for t in own_times)} | "
                     f"{', '.join(f'{t:.2f}' for t in fused_times)} | {ratio:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fused_coupling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "fashion-mnist-cinn"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of timing in turn (default 5)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per p50 (default 200)")
    args = parser.parse_args(argv)
    from cadp.runtime import configure_allocator

    configure_allocator()
    seconds = compile_operator()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"operator compiled in {seconds:.0f} s")
    for name in args.models:
        print()
        print("\n".join(compare_model(name, args.rounds, args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
