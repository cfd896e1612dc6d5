"""Synthetic glyph datasets in the style of Synbols (Lacoste et al., 2020).

Reproduces the two bias scenarios of Branchaud-Charron et al. (2021), Section 4 / Appendix B:
binary classification of the characters ``'a'`` (label 0) vs ``'d'`` (label 1), with the glyph
colour as the group: red (group 0) vs blue (group 1).

* ``minority_group``: the group is independent of the class and rare,
  ``P(group=1) = minority_fraction``; classes are balanced within each group.
* ``sensitive_attribute``: a spurious correlation, ``P(group = label | label) = correlation``
  (mostly red 'a', mostly blue 'd'); classes are balanced.
* ``four_class`` (an addition to the paper's two): 4 classes ``'a' 'd' 'e' 'k'`` and two
  *noise domains* as the group: group 0 "clean" (the usual noise) and group 1 "noisy" (per-pixel
  noise std x ``NOISY_SIGMA_SCALE``), rare and class-independent like ``minority_group``
  (``P(group=1) = minority_fraction``). The glyph colour (red/blue) is drawn independently of
  class and group, so the rare, harder noisy group is the worst group.

The test split is balanced in both scenarios: every (label, group) cell has the same size
(when ``n_test`` is a multiple of the number of cells; otherwise cells differ by at most one).

Each glyph gets a random DejaVu font, size, rotation (±10°) and position, an antialiased
foreground in a jittered red/blue, a random grey gradient background and per-pixel Gaussian
noise. Label/group assignments of a split are stratified (exact cell counts, largest-remainder
rounding) and shuffled with ``default_rng([seed, split_id])``; the pixels of shard ``i`` come
from ``default_rng([seed, split_id, i])``, so shards are independent and the output does not
depend on ``num_workers``.

Modules, by role: :mod:`~rayfal.data.sources.glyphs.render` (drawing one glyph image: fonts,
rotation, scale, colour, background, noise), :mod:`~rayfal.data.sources.glyphs.sample`
(scenario sampling: the class, group and colour of each row) and
:mod:`~rayfal.data.sources.glyphs.write` (sharded Parquet, manifest, :func:`generate_glyphs`).
Patch private helpers (``_write_shard``, ``_generate_into``) on the submodule that uses them.
"""

from rayfal.data.sources.glyphs.render import (
    FONT_DIR,
    FONT_FILES,
    available_fonts,
    render_images,
)
from rayfal.data.sources.glyphs.sample import (
    ALL_SCENARIOS,
    EXTRA_SCENARIOS,
    FOUR_CLASS_CHARS,
    FOUR_CLASS_GROUP_NAMES,
    GROUP_NAMES,
    NOISY_SIGMA_SCALE,
    SCENARIOS,
    render_glyphs,
    sample_labels_groups,
)
from rayfal.data.sources.glyphs.write import (
    GENERATOR_VERSION,
    MANIFEST,
    ROW_GROUP_ROWS,
    SPLITS,
    generate_glyphs,
)

__all__ = [
    "ALL_SCENARIOS",
    "EXTRA_SCENARIOS",
    "FONT_DIR",
    "FONT_FILES",
    "FOUR_CLASS_CHARS",
    "FOUR_CLASS_GROUP_NAMES",
    "GENERATOR_VERSION",
    "GROUP_NAMES",
    "MANIFEST",
    "NOISY_SIGMA_SCALE",
    "ROW_GROUP_ROWS",
    "SCENARIOS",
    "SPLITS",
    "available_fonts",
    "generate_glyphs",
    "render_glyphs",
    "render_images",
    "sample_labels_groups",
]
