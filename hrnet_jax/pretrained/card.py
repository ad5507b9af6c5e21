"""The model card (``README.md``) of a folder ``save_for_hub`` writes, in the form of timm's
(``timm/models/_hub.py generate_readme``): YAML header (``tags``, ``library_name``,
``license``, ``datasets``, ``pipeline_tag``), ``# Model card for NAME``, ``## Model Details``,
``## Model Usage``, ``## Model Comparison``, ``## Citation``.

Every figure is computed from the model, none typed in: Params (M) counted over its ``nnx.Param``
leaves (timm counts parameters, not buffers), GMACs from XLA's cost analysis of the lowered
forward pass (``flops / 2``), Activations (M) counted as fvcore does for timm's tables (the
output elements of every convolution and matrix multiply), at the image size of the weights'
``pretrained_cfg``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

USAGE_BEGIN = '<!-- usage:begin -->'
USAGE_END = '<!-- usage:end -->'
CITATION = """@article{WangSCJDZLMTWLX19,
  title={Deep High-Resolution Representation Learning for Visual Recognition},
  author={Jingdong Wang and Ke Sun and Tianheng Cheng and Borui Jiang and Chaorui Deng and
    Yang Zhao and Dong Liu and Yadong Mu and Mingkui Tan and Xinggang Wang and Wenyu Liu and
    Bin Xiao},
  journal={TPAMI},
  year={2019}
}"""
PAPER = 'Deep High-Resolution Representation Learning for Visual Recognition: https://arxiv.org/abs/1908.07919'
_MATMULS = ('conv_general_dilated', 'dot_general')


def _forward(model: nnx.Module):
  graphdef, state = nnx.split(model)
  return (lambda s, x: nnx.merge(graphdef, s)(x)), state


def _activations(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in _MATMULS:
      total += sum(int(np.prod(v.aval.shape)) for v in eqn.outvars)
    for param in eqn.params.values():  # the bodies of pjit, remat, scan, custom_vjp
      inner = getattr(param, 'jaxpr', param)
      if hasattr(inner, 'eqns'):
        total += _activations(inner)
  return total


def model_stats(model: nnx.Module, image_size: tuple[int, int]) -> dict[str, float]:
  """``{'params_m', 'gmacs', 'activations_m'}`` of ``model`` (eval mode) on one
  ``[1, H, W, in_chans]`` float32 image, ``image_size`` ``(H, W)``. Nothing is compiled: the
  forward pass is traced and lowered once (XLA's HLO cost analysis of the lowered module)."""
  params = nnx.state(model, nnx.Param)
  n_params = sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(params))
  forward, state = _forward(model)
  in_chans = getattr(model, 'in_chans', 3)
  x = jax.ShapeDtypeStruct((1, *image_size, in_chans), jnp.float32)
  traced = jax.jit(forward).trace(state, x)
  cost = traced.lower().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {
    'params_m': n_params / 1e6,
    'gmacs': float(cost['flops']) / 2 / 1e9,
    'activations_m': _activations(traced.jaxpr.jaxpr) / 1e6,
  }


def usage(name: str) -> str:
  """The three usages of timm's card (classification with top-5, feature maps, embeddings) as
  hrnet-jax code loading the model name ``name`` (``'hrnet_w18.ms_aug_in1k'``,
  ``'hf-hub:org/repo'``), between ``USAGE_BEGIN`` / ``USAGE_END`` markers: the README's seed
  card and every generated card."""
  return f"""{USAGE_BEGIN}
### Image Classification
```python
from urllib.request import urlopen

import jax
from PIL import Image

import hrnet_jax
from hrnet_jax.data import create_transform, resolve_model_data_config

url = 'https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/beignets-task-guide.png'
img = Image.open(urlopen(url))
model = hrnet_jax.create_model('{name}', pretrained=True)
model.eval()
config = resolve_model_data_config(model)
transform = create_transform(**config, is_training=False)
output = model(transform(img)[None])  # [1, H, W, 3] -> [1, 1000]
top5_probabilities, top5_class_indices = jax.lax.top_k(jax.nn.softmax(output) * 100, k=5)
```

### Feature Map Extraction
```python
model = hrnet_jax.create_model('{name}', pretrained=True, features_only=True)
model.eval()
for o in model(transform(img)[None]):
  print(o.shape)  # [1, H/2, W/2, 64], [1, H/4, W/4, 128], ... [1, H/32, W/32, 1024]
```

### Image Embeddings
```python
model = hrnet_jax.create_model('{name}', pretrained=True, num_classes=0)
model.eval()
output = model(transform(img)[None])  # [1, num_features] pooled embedding
# or equivalently, without the classifier
features = model.forward_features(transform(img)[None])  # [1, H/32, W/32, num_features]
embedding = model.forward_head(features, pre_logits=True)  # [1, num_features]
```
{USAGE_END}
"""


def _figure(value: float) -> str:
  return f'{value:.1f}' if value >= 10 else f'{value:.2f}'


def generate_readme(
  model: nnx.Module,
  *,
  repo_id: str,
  pretrained_cfg: dict | None,
  image_size: tuple[int, int],
  parity: dict | None = None,
) -> str:
  """The card text of ``model`` published as ``repo_id``. ``parity``: ``{'source': NAME,
  'max_abs_diff': float, 'input': TEXT}``, the logits' difference against the source
  checkpoint measured by the caller; omitted from the card when None."""
  cfg = pretrained_cfg or {}
  stats = model_stats(model, image_size)
  tag = cfg.get('tag') or getattr(model, 'arch', repo_id)
  details = [
    ('Model Type', 'Image classification / feature backbone'),
    (
      'Model Stats',
      [
        f'Params (M): {_figure(stats["params_m"])}',
        f'GMACs: {_figure(stats["gmacs"])}',
        f'Activations (M): {_figure(stats["activations_m"])}',
        f'Image size: {image_size[0]} x {image_size[1]}',
      ],
    ),
    ('Papers', [PAPER]),
    ('Dataset', 'ImageNet-1k'),
    ('Original', f'https://huggingface.co/{cfg["hf_hub_id"]}' if cfg.get('hf_hub_id') else tag),
  ]
  lines = [
    '---',
    'tags:',
    '- image-classification',
    '- hrnet-jax',
    '- jax',
    '- flax',
    'library_name: hrnet-jax',
    f'license: {cfg.get("license") or "mit"}',
    'datasets:',
    '- imagenet-1k',
    'pipeline_tag: image-classification',
    '---',
    f'# Model card for {repo_id.split("/")[-1]}',
    '',
    f'HRNet ({model.arch}) in JAX / Flax NNX, weights of {tag} converted with hrnet-jax.',
    '',
    '## Model Details',
  ]
  for key, value in details:
    if isinstance(value, list):
      lines += [f'- **{key}:**'] + [f'  - {v}' for v in value]
    else:
      lines.append(f'- **{key}:** {value}')
  lines += ['', '## Model Usage', usage(f'hf-hub:{repo_id}'), '## Model Comparison']
  if cfg.get('top1') is not None:
    lines.append(f'Published ImageNet-1k top-1 {cfg["top1"]:.3f}, top-5 {cfg["top5"]:.3f} (timm).')
  if parity is not None:
    lines.append(
      f'Parity: max abs diff of the logits against {parity["source"]} '
      f'{parity["max_abs_diff"]:.3g} on {parity["input"]}.'
    )
  lines += ['', '## Citation', '```bibtex', CITATION, '```', '']
  return '\n'.join(lines)
