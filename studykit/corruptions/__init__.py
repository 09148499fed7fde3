"""CIFAR-10-C corruptions as batched torch functions, one module per family (noise, blur,
weather with frost, digital), their parameter table and `corrupt(x, name, severity)`.

The 15 benchmark corruptions and the 4 extra (validation) corruptions of Hendrycks &
Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", at 5 severities, with the CIFAR-10-C constants of the reference script
``make_cifar_c.py`` (see ``CORRUPTIONS.md``). Every function works on a whole batch of float
NCHW images in [0, 1] on any device; there is no per-image Python loop, no PIL, no
ImageMagick and no scipy/skimage/OpenCV. Python loops that remain run over kernel taps, zoom
factors, fractal levels or distance-transform sweeps, never over images.

Randomness: every draw uses the ``generator`` passed to :func:`corrupt` (torch's default CPU
generator when it is ``None``). Random layers (noise, masks, displacement fields, fractals,
textures) are computed on the generator's device and then moved to the images' device, so a
CPU generator with a given seed yields the same corruption on CPU and CUDA (up to float
round-off in the deterministic image operations). Random parameters are drawn per image where
the reference draws them per image (motion-blur and snow angles, affine and displacement
fields, fractals, textures, pixel swaps, noise).

How each corruption relates to the reference:

* Exact re-implementations of the reference arithmetic (up to float32 round-off and the
  uint8 rounding PIL/ImageMagick/OpenCV apply between steps, which is skipped except where
  noted): gaussian/shot/speckle noise, impulse noise (per-value salt and pepper as
  ``skimage.util.random_noise`` draws it now; older scikit-image releases drew a fixed count
  of coordinates, the same fraction in expectation), defocus blur (the 17x17 aliased disk
  smoothed by a 3x3 Gaussian, reflect-101 border as ``cv2.filter2D``), gaussian blur
  (scipy kernel, ``nearest`` border), zoom blur (scipy's order-1 zoom of the centre crop,
  including its off-centre trimming and numpy's ``arange`` end points), fog (the
  diamond-square plasma fractal, batched), brightness and saturate (closed form of the
  skimage HSV round trip: hue is fixed, so each channel is ``v * (1 - s * f(hue))``),
  contrast, elastic transform (OpenCV affine with reflect-101 border, then scipy-smoothed
  uniform displacement sampled with a symmetric border), pixelate (PIL's BOX resampling
  weights, which are not ``F.interpolate(mode="area")``: PIL counts whole pixels whose
  centres fall in each box), and JPEG (libjpeg through ``torchvision.io``, on the CPU
  also for CUDA inputs: nvjpeg encodes differently). tests/test_corruptions.py checks these
  against scipy, PIL, matplotlib and the reference's own loops.
* glass_blur: the reference's pixel "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` works
  on numpy row views, so it copies instead of swapping: every processed pixel takes the
  value of a random neighbour at offsets in ``{-d, ..., d-1}`` (numpy ``randint``'s open upper
  end). With ``max_delta = 1`` (all CIFAR severities) that neighbour is never one the loop has
  already written, so the sequential loop is exactly a parallel gather, which is what this
  module does; for ``max_delta > 1`` the gather is a batched approximation of the sequential
  loop. The reference's uint8 truncation between the two blurs is kept.
* motion_blur (and the snow streaks): ImageMagick's ``MotionBlurImage`` kernel (a one-sided
  Gaussian over ``2 * ceil(radius) + 1`` taps at offsets ``ceil(i cos(a) - .5),
  ceil(i sin(a) - .5)``, edge virtual pixels) applied as per-image tap gathers; the PNG
  round trips of the reference (uint8 rounding) are skipped. This follows the source of
  ImageMagick 6.8+/7 (older releases supersampled the kernel and truncated the offsets), not
  a binary, so small differences to the released files remain. As in ImageMagick, the radius
  only sets the kernel width, so severities 3 (6, 2) and 4 (8, 2) are the same blur.
* frost: the reference blends crops of five frost photographs that the kit does not ship.
  ``studykit.corruptions.frost`` crops them the reference way when they are installed (checked by
  sha256; ``studykit.corruptions.frost.download_frost_photographs``), and otherwise synthesizes a
  procedural frost texture (ice ridges over a per-image "photo style" of level and colour)
  calibrated to the photographs' crop statistics. ``studykit.corruptions.frost.frost_source()`` says
  which one is in use. The synthesized texture matches statistics, not pixels, so frost is
  the least faithful corruption without the photographs.
* spatter: mud mode is exact; water mode re-implements the reference's OpenCV chain
  (Canny edges of the liquid layer, 5x5 chamfer L2 distance transform, truncation, box blur,
  histogram equalization, emboss filter) in batched torch; OpenCV's Canny tie-breaking is
  mimicked but not guaranteed identical.

Values are not truncated to uint8 at the end: the released ``.npy`` files are (``np.uint8``
truncation), so callers that reproduce the files quantize the returned images themselves.
"""

from studykit.corruptions.params import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS
from studykit.corruptions.registry import corrupt, list_corruptions

__all__ = ["BENCHMARK_CORRUPTIONS", "EXTRA_CORRUPTIONS", "corrupt", "list_corruptions"]
