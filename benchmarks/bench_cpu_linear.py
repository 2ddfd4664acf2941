"""Float32 linear layers on this CPU: PyTorch's BLAS against oneDNN (``textenv.models.cpu_linear``).

For each product of the embedded SmolLM2-135M (hidden 576, MLP 1536, vocabulary 49,152) at the row counts a
PPO iteration uses (``--rows``: 704 = 8 x (64 + 24) training positions, 512 = a prefill of 8 x 64, 8 = one
decode step of 8 rows), the best-of-``--repeat`` time of the forward product (``x @ W.T``), the input
gradient (``g @ W``) and the weight gradient (``g.T @ x``) through each kernel, side by side in one process,
as GFLOP/s and the oneDNN/BLAS speed ratio. The output layer is timed forward only at the decode row count
(the training passes run it on the 24 response positions only). One JSON line per product:

    python -m benchmarks.bench_cpu_linear [--threads 2] [--out benchmarks/results/cpu_linear.jsonl]
"""

from __future__ import annotations

import torch

from benchmarks.common import RESULTS, arg_parser, best_seconds, emit, metadata, out_path
from textenv.models.cpu_linear import onednn_available

# (name, out features, in features) of SmolLM2-135M's linear layers
LAYERS = [("attn q/o", 576, 576), ("attn k/v", 192, 576), ("mlp up/gate", 1536, 576), ("mlp down", 576, 1536)]
OUTPUT = ("output layer", 49152, 576)


def products(rows: int, out_f: int, in_f: int, forward_only: bool) -> dict:
    """name -> (blas fn, onednn fn) for one layer's products at ``rows`` rows."""
    dnn = torch.ops.mkldnn._linear_pointwise
    x, w, g = torch.randn(rows, in_f), torch.randn(out_f, in_f), torch.randn(rows, out_f)
    out = {"forward": (lambda: torch.nn.functional.linear(x, w), lambda: dnn(x, w, None, "none", [], ""))}
    if not forward_only:
        out["input_grad"] = (lambda: g @ w, lambda: dnn(g, w.t(), None, "none", [], ""))
        out["weight_grad"] = (lambda: g.t() @ x, lambda: dnn(g.t(), x.t(), None, "none", [], ""))
    return out


def main(argv=None) -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[704, 512, 8])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(RESULTS / "cpu_linear.jsonl"), help="'-': print only")
    args = parser.parse_args(argv)
    if not onednn_available():
        parser.error("this PyTorch has no oneDNN linear kernel (torch.ops.mkldnn._linear_pointwise)")
    if any(r < 1 for r in args.rows) or args.repeat < 1:
        parser.error(f"--rows {args.rows} and --repeat {args.repeat} must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meta = metadata()
    out = out_path(args.out)
    for rows in args.rows:
        layers = LAYERS + ([OUTPUT] if rows == min(args.rows) else [])
        for name, out_f, in_f in layers:
            for kind, (blas, onednn) in products(rows, out_f, in_f, forward_only=name == OUTPUT[0]).items():
                flops = 2 * rows * out_f * in_f
                t_blas, t_dnn = best_seconds(blas, args.repeat), best_seconds(onednn, args.repeat)
                row = {
                    "bench": "cpu_linear",
                    "layer": name,
                    "shape": [rows, out_f, in_f],
                    "product": kind,
                    "blas_gflops": flops / t_blas / 1e9,
                    "onednn_gflops": flops / t_dnn / 1e9,
                    "onednn_speedup": t_blas / t_dnn,
                    "threads": args.threads,
                    **meta,
                }
                emit(row, out=out)


if __name__ == "__main__":
    main()
