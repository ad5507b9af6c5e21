"""The deployable program of a checkpoint: preprocessing + HRNet as one pure JAX function.

``build(options)`` loads a checkpoint folder (``convert_official_weights`` / ``hrnet-train`` /
``save_pretrained``) and returns a :class:`Program`: ``fn(x)`` with the weights closed over (they
become constants of the exported artifact), its input spec, its output names and the metadata
written beside the artifact (``OUT.json``), so that a consumer needs nothing from hrnet-jax.

Input contract (``input_dtype``, ``layout``):

- ``uint8`` (default): RGB pixels ``[B, H, W, 3]`` (``[B, 3, H, W]`` with ``layout='nchw'``),
  already resized and center-cropped as ``OUT.json['preprocessing']`` says; the program divides
  by 255 and normalizes with the checkpoint's mean / std (``timm.data.transforms_factory``'s
  ``ToTensor`` + ``Normalize``).
- ``float32``: the model's own input, already normalized.

Outputs, float32, as ``hrnet_jax.create_model`` returns them (maps NCHW with ``layout='nchw'``):

- classifiers: ``logits [B, num_classes]``, or with ``features_only`` the maps ``feature_i
  [B, H/s, W/s, C]``;
- dense models (``hrnet_jax.models.dense``, task in ``OUT.json['task']``): segmentation ``logits
  [B, H/4, W/4, num_classes]``, pose ``heatmaps [B, H/4, W/4, num_keypoints]``, detection
  pyramids ``feature_0`` .. ``feature_4`` ``[B, H/s, W/s, 256]`` (``DenseHRNet.__call__``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import hrnet_jax
from hrnet_jax import runtime
from hrnet_jax.data.imagenet import imagenet_class_names
from hrnet_jax.data.transforms import normalize
from hrnet_jax.errors import BadInputError
from hrnet_jax.models import dense
from hrnet_jax.pretrained import checkpoint

INPUT_DTYPES = ('uint8', 'float32')
LAYOUTS = ('nhwc', 'nchw')
COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """What to export. ``batch_size`` None: symbolic batch; ``input_size`` None: the checkpoint's
  ``pretrained_cfg['input_size']`` (H, W)."""

  checkpoint: str
  batch_size: int | None = None
  input_size: tuple[int, int] | None = None
  features_only: bool = False
  feature_location: str = 'incre'
  out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)
  fold_bn: bool = False
  dtype: str = 'float32'
  input_dtype: str = 'uint8'
  layout: str = 'nhwc'

  def __post_init__(self):
    for name, allowed in (
      ('dtype', COMPUTE_DTYPES),
      ('input_dtype', INPUT_DTYPES),
      ('layout', LAYOUTS),
      ('feature_location', ('incre', '')),
    ):
      if getattr(self, name) not in allowed:
        raise BadInputError(f'{name} must be one of {allowed}, got {getattr(self, name)!r}')
    if self.batch_size is not None and self.batch_size < 1:
      raise BadInputError(f'--batch-size must be >= 1, got {self.batch_size}')
    if self.input_size is not None and min(self.input_size) < 32:
      raise BadInputError(f'--input-size must be >= 32, got {self.input_size}')


@dataclasses.dataclass
class Program:
  """``fn(x) -> tuple of outputs``; ``reference(x)`` the same contract computed by the
  checkpoint's unmodified float32 model (what an export is verified against)."""

  fn: Callable[[jax.Array], tuple[jax.Array, ...]]
  reference: Callable[[jax.Array], tuple[jax.Array, ...]]
  input_shape: tuple[int | None, ...]  # None: the symbolic batch
  input_dtype: str
  output_names: tuple[str, ...]
  metadata: dict[str, Any]
  weights_bytes: int = 0  # the exported model's state: constants of the artifact
  _reference_outputs: dict[int, list[np.ndarray]] = dataclasses.field(
    default_factory=dict, repr=False, compare=False
  )

  def sample_input(self, batch: int, seed: int = 0) -> np.ndarray:
    """A fixed random (non-constant) input of ``batch`` images in the program's contract."""
    shape = (batch,) + tuple(self.input_shape[1:])
    rng = np.random.default_rng(seed)
    if self.input_dtype == 'uint8':
      return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)

  def reference_outputs(self, batch: int) -> list[np.ndarray]:
    """``reference(sample_input(batch))`` as float32 numpy arrays, jitted (XLA:CPU options of
    ``hrnet_jax.runtime.compiler_options('infer')``) and computed once per batch: one program
    exported to several formats is compiled and run once for all their verifications."""
    if batch not in self._reference_outputs:
      reference = jax.jit(self.reference, compiler_options=runtime.compiler_options('infer'))
      self._reference_outputs[batch] = [
        np.asarray(r, np.float32) for r in reference(self.sample_input(batch))
      ]
    return self._reference_outputs[batch]


def _check_checkpoint(path: str) -> None:
  if not os.path.isdir(path):
    raise BadInputError(f'checkpoint directory not found: {path}')
  if not os.path.isfile(os.path.join(path, checkpoint.CONFIG_FILE)):
    raise BadInputError(f'{path}: not a checkpoint folder (no {checkpoint.CONFIG_FILE})')


def _class_names(cfg: dict, num_classes: int) -> list[str] | None:
  if cfg.get('class_names'):
    return list(cfg['class_names'])
  if num_classes == 1000:
    return list(imagenet_class_names())
  return None


def _wrap(model, options: ExportOptions, mean, std) -> Callable:
  """The model behind the input contract: layout, uint8 -> normalized float32."""
  graphdef, state = nnx.split(model)

  def fn(x):
    if options.layout == 'nchw':
      x = jnp.transpose(x, (0, 2, 3, 1))
    if options.input_dtype == 'uint8':
      x = normalize(x, mean, std)
    out = nnx.merge(graphdef, state)(x)
    outs = tuple(out) if isinstance(out, (list, tuple)) else (out,)
    outs = tuple(o.astype(jnp.float32) for o in outs)
    if options.layout == 'nchw':
      outs = tuple(jnp.transpose(o, (0, 3, 1, 2)) if o.ndim == 4 else o for o in outs)
    return outs

  return fn


def build(options: ExportOptions) -> Program:
  """The :class:`Program` of ``options``.

  Raises ``BadInputError`` for a missing folder or bad option, and what ``load_pretrained``
  raises for a checkpoint that does not load (``CheckpointMismatchError``, ``ValueError``).
  """

  _check_checkpoint(options.checkpoint)
  config = checkpoint.read_config(options.checkpoint)
  if options.features_only and config.get('arch') in dense.DENSE_CONFIGS:
    raise BadInputError(
      f'{options.checkpoint}: {config["arch"]} is a dense model, whose outputs '
      'are maps already; --features-only is for classifiers'
    )
  kwargs: dict[str, Any] = {}
  if options.features_only:
    kwargs = dict(
      features_only=True, feature_location=options.feature_location, out_indices=options.out_indices
    )
  reference_model = hrnet_jax.load_pretrained(options.checkpoint, **kwargs)
  model = reference_model  # the exported model is a second copy only if it differs
  if options.dtype == 'bfloat16' or options.fold_bn:
    dtype = jnp.bfloat16 if options.dtype == 'bfloat16' else jnp.float32
    model = hrnet_jax.load_pretrained(options.checkpoint, dtype=dtype, **kwargs)
    if options.fold_bn:
      hrnet_jax.fold_batchnorm(model)

  cfg = dict(reference_model.pretrained_cfg or {})
  mean = tuple(cfg.get('mean') or hrnet_jax.pretrained.IMAGENET_DEFAULT_MEAN)
  std = tuple(cfg.get('std') or hrnet_jax.pretrained.IMAGENET_DEFAULT_STD)
  h, w = options.input_size or tuple(cfg.get('input_size', (3, 224, 224))[1:])
  b = options.batch_size
  shape = (b, 3, h, w) if options.layout == 'nchw' else (b, h, w, 3)

  fn = _wrap(model, options, mean, std)
  reference = _wrap(reference_model, dataclasses.replace(options, dtype='float32'), mean, std)
  out_shapes = jax.eval_shape(
    reference, jax.ShapeDtypeStruct((1,) + shape[1:], np.dtype(options.input_dtype))
  )
  task = getattr(reference_model, 'task', 'classify')  # DenseHRNet.task
  num_classes = num_keypoints = None
  if options.features_only or task == 'detect':
    info = reference_model.feature_info
    names = tuple(f'feature_{i["index"]}' for i in info)
    outputs = [
      {
        'name': n,
        'channels': i['num_chs'],
        'reduction': i['reduction'],
        'shape': [b] + list(o.shape[1:]),
      }
      for n, i, o in zip(names, info, out_shapes)
    ]
  elif task == 'classify':
    names = ('logits',)
    num_classes = reference_model.num_classes
    outputs = [{'name': 'logits', 'shape': [b, num_classes]}]
  else:  # segment / pose: one stride-4 map
    names = ('logits',) if task == 'segment' else ('heatmaps',)
    if task == 'segment':
      num_classes = reference_model.num_outputs
    else:
      num_keypoints = reference_model.num_outputs
    outputs = [
      {
        'name': names[0],
        'channels': reference_model.num_outputs,
        'reduction': 4,
        'shape': [b] + list(out_shapes[0].shape[1:]),
      }
    ]
  metadata = {
    'arch': config['arch'],
    'task': task,
    'checkpoint': os.path.abspath(options.checkpoint),
    'source': config.get('source', {}),
    'input': {
      'name': 'image',
      'shape': list(shape),
      'dtype': options.input_dtype,
      'layout': options.layout.upper(),
      'description': (
        'RGB pixels 0..255, resized and center-cropped as in '
        '"preprocessing"; mean/std normalization is inside the program'
        if options.input_dtype == 'uint8'
        else 'RGB, resized, center-cropped, scaled to [0, 1] and normalized with '
        '"preprocessing" mean/std by the caller'
      ),
    },
    'outputs': outputs,
    'compute_dtype': options.dtype,
    'fold_bn': options.fold_bn,
    'features_only': options.features_only,
    'feature_location': options.feature_location if options.features_only else None,
    'preprocessing': {
      'input_size': [h, w],
      'crop_pct': cfg.get('crop_pct'),
      'interpolation': cfg.get('interpolation'),
      'mean': list(mean),
      'std': list(std),
      'tag': cfg.get('tag'),
    },
    'num_classes': num_classes,
    'class_names': _class_names(cfg, num_classes) if num_classes else None,
    'num_keypoints': num_keypoints,
  }
  return Program(
    fn=fn,
    reference=reference,
    input_shape=shape,
    input_dtype=options.input_dtype,
    output_names=names,
    metadata=metadata,
    weights_bytes=sum(x.nbytes for x in jax.tree.leaves(nnx.state(model))),
  )
