"""``hrnet-predict``: top-k ImageNet predictions of a converted HRNet checkpoint for image files.

    hrnet-predict --checkpoint converted/hrnet_w18 cat.jpg dog.png --top-k 5 [--json]

Preprocessing is the checkpoint's pretrained cfg (timm eval transform, see
``hrnet_jax.transforms.eval_transform``); probabilities are the softmax of the logits.
Exit status (``hrnet_jax.errors``): 0 all images predicted; 1 some images could not be read or
gave non-finite logits (each reported on stderr, the others still predicted), or an environment
failure; 2 usage error (bad arguments; missing, corrupt or checksum-failing checkpoint).
``--json`` output is strict JSON (no NaN / Infinity).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from hrnet_jax import errors

__all__ = ["main", "build_parser"]

PROG = "hrnet-predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Classify images with a hrnet-jax checkpoint folder "
        "(written by convert_official_weights or hrnet_jax.save_pretrained).",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top-k", type=errors.positive_int, default=5,
                   help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    p.add_argument("--batch-size", type=errors.positive_int, default=32,
                   help="images per forward pass (default 32)")
    p.add_argument("--test-size", action="store_true",
                   help="use the tag's test_input_size/test_crop_pct when it has them (timm "
                   "use_test_size)")
    p.add_argument("--task", choices=("classify", "segment", "pose"), default="classify",
                   help="classify (top-k), or with a dense checkpoint: segment (PNG mask + .npy "
                   "per image) or pose (keypoints JSON + overlay PNG per image); see "
                   "hrnet_jax.predict_dense")
    p.add_argument("--output-dir", metavar="DIR", help="where --task segment/pose write files")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _preprocessing_cfg(model: Any) -> dict[str, Any]:
    """The model's pretrained cfg dict; else its arch's default tag; else timm's bare defaults."""
    from hrnet_jax.pretrained import get_pretrained_cfg

    cfg = getattr(model, "pretrained_cfg", None)
    if cfg:
        return dict(cfg)
    try:
        return get_pretrained_cfg(getattr(model, "arch", "")).to_dict()
    except ValueError:
        return {}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)  # stable for large logits
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _run_batches(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits ``[N, num_classes]`` of ``x [N, H, W, 3]``, jitted once for a fixed batch shape."""
    import jax
    from flax import nnx

    from hrnet_jax import runtime

    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda s, xb: nnx.merge(graphdef, s)(xb),
                    compiler_options=runtime.compiler_options("infer"))
    forward = functools.partial(apply, state)
    bs = min(batch_size, len(x))
    out = []
    for start in range(0, len(x), bs):
        xb = x[start:start + bs]
        n = len(xb)
        if n < bs:  # pad the last batch so jit does not compile a second shape
            xb = np.concatenate([xb, np.zeros((bs - n,) + xb.shape[1:], xb.dtype)])
        out.append(np.asarray(forward(xb), dtype=np.float32)[:n])
    return np.concatenate(out)


def _format_table(path: str, top: list[dict[str, Any]]) -> str:
    width = max(len(t["label"]) for t in top)
    lines = [path]
    for rank, t in enumerate(top, 1):
        lines.append(f"  {rank:>2}. {t['label']:<{width}}  {100 * t['prob']:7.3f}%  (class {t['index']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of exiting (0 ok, 1 some images failed,
    2 usage/checkpoint error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code or 0)

    return errors.run_cli(PROG, lambda: _predict(args), verbose=args.verbose)


def _predict(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.checkpoint):
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such folder")

    # Heavy imports after argument checks, so usage errors and --help stay fast.
    from hrnet_jax import compile_cache, load_pretrained
    compile_cache.enable()  # HRNET_JAX_COMPILATION_CACHE
    from hrnet_jax.imagenet import imagenet_class_names
    from hrnet_jax.transforms import eval_transform, load_image

    model = load_pretrained(args.checkpoint)
    cfg = _preprocessing_cfg(model)
    if args.task != "classify":
        return _main_dense(args, model, cfg)

    results: list[dict[str, Any]] = [{"image": p} for p in args.images]
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    for i, path in enumerate(args.images):
        try:
            arrays.append(eval_transform(load_image(path), cfg, use_test_size=args.test_size))
            ok.append(i)
        except ValueError as e:
            results[i]["error"] = str(e)
            _error(str(e))

    if ok:
        logits = _run_batches(model, np.stack(arrays), args.batch_size)
        finite = np.isfinite(logits).all(axis=-1)
        probs = _softmax(np.where(finite[:, None], logits, 0.0))
        num_classes = probs.shape[-1]
        names = imagenet_class_names() if num_classes == 1000 else None
        k = min(args.top_k, num_classes)
        for i, p, good in zip(ok, probs, finite):
            if not good:  # never print a NaN probability
                results[i]["error"] = (f"{args.images[i]}: the model gave non-finite logits "
                                       "(NaN/inf) for this image")
                _error(results[i]["error"])
                continue
            idx = np.argsort(-p, kind="stable")[:k]
            results[i]["top_k"] = [
                {"index": int(j), "label": names[j] if names else str(int(j)), "prob": float(p[j])}
                for j in idx
            ]

    if args.json:
        doc = {
            "checkpoint": args.checkpoint,
            "arch": getattr(model, "arch", None),
            "pretrained_tag": cfg.get("tag"),
            "results": results,
        }
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        tables = [_format_table(r["image"], r["top_k"]) for r in results if "top_k" in r]
        if tables:
            print("\n\n".join(tables))
    return 0 if all("top_k" in r for r in results) else 1


def _main_dense(args: argparse.Namespace, model: Any, cfg: dict[str, Any]) -> int:
    """``--task segment|pose``: files per image into ``--output-dir`` (``predict_dense``)."""
    from hrnet_jax import predict_dense
    from hrnet_jax.transforms import load_image

    if getattr(model, "task", None) != args.task:
        raise errors.BadInputError(f"--task {args.task}: {args.checkpoint} holds a "
                                   f"{getattr(model, 'task', 'classification')} model "
                                   f"({model.arch})")
    if not args.output_dir:
        raise errors.BadInputError(f"--task {args.task} needs --output-dir")
    os.makedirs(args.output_dir, exist_ok=True)
    results, failed = [], 0
    for path in args.images:
        try:
            img = load_image(path)
        except ValueError as e:
            _error(str(e))
            results.append({"image": path, "error": str(e)})
            failed += 1
            continue
        results.append(predict_dense.predict_file(model, args.task, path, img, cfg,
                                                   args.output_dir))
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "arch": model.arch, "task": args.task,
                          "results": results}, indent=2, allow_nan=False))
    else:
        for r in results:
            if "error" not in r:
                print(f"{r['image']}: " + ", ".join(str(v) for k, v in r.items()
                                                   if k.endswith(("_png", "_npy", "_json"))))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
