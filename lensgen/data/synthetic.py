"""An offline GREAT3-format generator: real branch layout, parametric galaxies.

Writes, per subfield SSS and epoch E, the files of a GREAT3 branch:
``image-SSS-E.fits`` (a grid × grid mosaic of stamps, float32),
``starfield_image-SSS-E.fits`` (3 × 3 noiseless PSF stars, the lower-left one at
its stamp's true centre, between pixels for even stamps), ``epoch_dither-SSS-E.txt``
(multi-epoch branches) and ``galaxy_catalog-SSS.fits`` and ``.txt`` (columns x, y,
ID; one ``# name`` header line per column), then packs them as ``<branch>.tar.gz``
laid out ``experiment/obs/shear/``. From there on the data take the same path as a
downloaded branch.

Galaxies start from bulge + disk Sérsic models (:func:`lensgen.lensing.light.sersic_ellipse`)
with COSMOS-like distributions (I < 23.5 sample, Mandelbaum et al. 2014, GREAT3
handbook): log-normal half-light radius (median 0.3″), disk n = 1, bulge
n ∈ [2.5, 4.5] with B/T ∈ [0, 1) (35 % pure disks), Rayleigh ellipticity
(σ_e = 0.2 per component), and a flux power law N(>F) ∝ F^−0.75 (number counts
d log N / dm ≈ 0.3) starting at S/N ≈ 12 for a median galaxy. The default
``"structured"`` population adds star-forming clumps, spiral arms, bars, lopsided
disks, clump-dominated irregulars and companions (:mod:`lensgen.data.morphology`,
fractions and sources there); ``"bulge_disk"`` keeps the smooth galaxies only.
Each galaxy is rendered on a 3 × 3 sub-pixel grid with its total flux fixed,
sheared, convolved with a Moffat (β = 3) PSF (ground: FWHM 0.5–0.95″ drawn per
subfield, GREAT3's seeing range; space: 2.5–3 pixels) and given Gaussian noise of
one variance per image, as in GREAT3. Constant-shear branches hold 90°-rotated
pairs whose positions a random permutation scatters over the grid (a partner's
structure is rotated with it).
"""

from __future__ import annotations

import tarfile
import tempfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from astropy.io import fits

from lensgen.data.great3 import Branch
from lensgen.data.morphology import (
    MORPHOLOGIES,
    draw_structure,
    rotate_structure,
    structured_galaxy,
)
from lensgen.errors import ConfigError
from lensgen.io.interrupt import check_interrupt
from lensgen.lensing.instrument import convolve, moffat_psf, padded_length
from lensgen.lensing.light import sersic_ellipse

OVERSAMPLE = 3
MOFFAT_BETA = 3.0
_BATCH = 500


def _first(draw, key, m: int) -> np.ndarray:
    """The first ``m`` of ``draw(key, (length,))`` for a power-of-two length ≥ 64: the same
    numbers as ``draw(key, (m,))`` (JAX's threefry draws are indexed by position), with
    one compiled sampler for many ``m`` instead of one per ``m`` (the beta sampler takes
    ~1 s to compile)."""
    return np.asarray(draw(key, (padded_length(m, 64),)))[:m]


def draw_galaxies(
    key,
    n: int,
    pixel_scale: float,
    noise_sigma: float,
    paired: bool,
    morphology: str = "structured",
) -> dict:
    """COSMOS-like galaxy parameters for ``n`` galaxies (module docstring).

    Parameters
    ----------
    key : jax.random.PRNGKey
        Random key.
    n : int
        Number of galaxies.
    pixel_scale : float
        Pixel scale, arcsec.
    noise_sigma : float
        Noise rms per pixel, image units; sets the flux scale (S/N ≈ 12 at the faint end).
    paired : bool
        The odd galaxies are the even ones rotated by 90° (e → −e, structure rotated).
    morphology : {"structured", "bulge_disk"}
        Population (:mod:`lensgen.data.morphology`). Both draw the same base
        bulge + disk parameters from one key; ``"structured"`` adds the structure
        arrays (irregulars lose their bulge).

    Returns
    -------
    dict
        Arrays of length ``n`` (``(n, 8)`` for clumps): sizes in arcsec, flux in
        image units, angles in radians.
    """
    if morphology not in MORPHOLOGIES:
        raise ConfigError(
            f"morphology must be one of {', '.join(MORPHOLOGIES)}, got {morphology!r}"
        )
    m = (n + 1) // 2 if paired else n
    ks = jax.random.split(key, 10)
    u = lambda k: _first(jax.random.uniform, k, m)  # noqa: E731
    r_hl = np.clip(0.3 * np.exp(0.45 * _first(jax.random.normal, ks[0], m)), 0.08, 1.2)
    bulge_n = 2.5 + 2.0 * u(ks[1])
    beta = _first(lambda k, shape: jax.random.beta(k, 1.5, 3.0, shape), ks[3], m)
    bt = np.where(u(ks[2]) < 0.35, 0.0, beta)
    e_mod = np.clip(0.2 * np.sqrt(-2.0 * np.log1p(-0.999 * u(ks[4]))), 0.0, 0.7)
    phi = np.pi * u(ks[5])
    # N(>F) ∝ F^-0.75 from F_min: S/N ≈ 12 for a 0.3″ galaxy in a 0.75″ PSF.
    sigma_px = np.hypot(0.3 / 1.18, 0.75 / 2.355) / pixel_scale
    f_min = 12.0 * noise_sigma * np.sqrt(4.0 * np.pi) * sigma_px
    flux = np.minimum(f_min * (1.0 - 0.999 * u(ks[6])) ** (-1.0 / 0.75), 40.0 * f_min)
    offset = (u(ks[7]) - 0.5) * pixel_scale, (u(ks[8]) - 0.5) * pixel_scale
    params = {
        "flux": flux,
        "r_disk": r_hl,
        "r_bulge": r_hl * (0.3 + 0.3 * u(ks[9])),
        "n_bulge": bulge_n,
        "bt": bt,
        "e1": e_mod * np.cos(2 * phi),
        "e2": e_mod * np.sin(2 * phi),
        "center_x": offset[0],
        "center_y": offset[1],
    }
    if morphology == "structured":
        params.update(draw_structure(jax.random.fold_in(key, 1), params, pixel_scale))
    if paired:
        params = {k: np.repeat(v, 2, axis=0)[:n] for k, v in params.items()}
        odd = np.arange(n) % 2 == 1
        params["e1"] = np.where(odd, -params["e1"], params["e1"])
        params["e2"] = np.where(odd, -params["e2"], params["e2"])
        params = rotate_structure(params, odd)
    return params


def apply_shear(e1, e2, g1: float, g2: float):
    """Sheared ellipticity ε' = (ε + g) / (1 + g* ε) for the |e| = (1−q)/(1+q) convention."""
    e = np.asarray(e1) + 1j * np.asarray(e2)
    g = complex(g1, g2)
    es = (e + g) / (1.0 + np.conj(g) * e)
    return es.real, es.imag


def _galaxy(p, xs, ys):
    """Bulge + disk of total flux ``p["flux"]`` on the sub-pixel grid, flux/sub-pixel."""
    disk = sersic_ellipse(
        xs, ys, 1.0, p["r_disk"], 1.0, p["e1"], p["e2"], p["center_x"], p["center_y"]
    )
    bulge = sersic_ellipse(
        xs,
        ys,
        1.0,
        p["r_bulge"],
        p["n_bulge"],
        0.5 * p["e1"],
        0.5 * p["e2"],
        p["center_x"],
        p["center_y"],
    )
    img = (1.0 - p["bt"]) * disk / jnp.sum(disk) + p["bt"] * bulge / jnp.sum(bulge)
    return p["flux"] * img


def render_galaxies(params: dict, psf: np.ndarray, size: int, pixel_scale: float) -> np.ndarray:
    """Noiseless PSF-convolved stamps (n, size, size), flux per pixel, float32.

    The stamp centre (pixel size/2 in each axis, 0-based) is the coordinate origin.
    ``params`` from :func:`draw_galaxies`; with structure arrays (``"arm_amp"``
    present) the galaxies are drawn by :func:`lensgen.data.morphology.structured_galaxy`.
    """
    galaxy = structured_galaxy if "arm_amp" in params else _galaxy
    sub = (np.arange(size * OVERSAMPLE) - (size * OVERSAMPLE - 1) / 2.0) / OVERSAMPLE
    sub = (sub - 0.5 * ((size + 1) % 2)) * pixel_scale
    xs, ys = np.meshgrid(sub.astype(np.float32), sub.astype(np.float32))
    psf = jnp.asarray(psf, jnp.float32)
    n = len(params["flux"])
    out = np.empty((n, size, size), np.float32)
    for start in range(0, n, _BATCH):
        check_interrupt()
        chunk = {k: jnp.asarray(v[start : start + _BATCH], jnp.float32) for k, v in params.items()}
        if len(chunk["flux"]) < _BATCH and n > _BATCH:  # keep one compiled shape
            pad = _BATCH - len(chunk["flux"])
            chunk = {
                k: jnp.concatenate([v, jnp.repeat(v[-1:], pad, axis=0)]) for k, v in chunk.items()
            }
        stamps = _render_batch(chunk, psf, xs, ys, galaxy, size)
        out[start : start + _BATCH] = np.asarray(stamps)[: min(_BATCH, n - start)]
    return out


@partial(jax.jit, static_argnums=(4, 5))
def _render_batch(p, psf, xs, ys, galaxy, size):
    """One batch on the sub-pixel grid, binned to pixels and convolved (the PSF is an
    argument: the epochs and subfields of a branch share one compiled program)."""
    fine = jax.vmap(galaxy, in_axes=(0, None, None))(p, xs, ys)
    binned = fine.reshape(-1, size, OVERSAMPLE, size, OVERSAMPLE).sum(axis=(2, 4))
    return convolve(binned, psf)


def star_stamp(fwhm: float, pixel_scale: float, size: int, shift=(0.0, 0.0)) -> np.ndarray:
    """A unit-flux Moffat (β = 3) star in a size × size stamp, centred on the stamp's
    true centre ((size − 1)/2, between pixels for even sizes) plus ``shift`` (dy, dx)
    pixels, each pixel averaged over 9 × 9 sub-pixel samples, as GalSim draws it."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0)) / pixel_scale
    sub = 9
    c = (np.arange(size * sub) + 0.5) / sub - 0.5 - (size - 1) / 2.0
    yy, xx = np.meshgrid(c - shift[0], c - shift[1], indexing="ij")
    fine = (1.0 + (xx**2 + yy**2) / alpha**2) ** (-MOFFAT_BETA)
    star = fine.reshape(size, sub, size, sub).mean(axis=(1, 3))
    return (star / star.sum()).astype(np.float32)


def _starfield(fwhm: float, pixel_scale: float, size: int, key) -> np.ndarray:
    """3 × 3 noiseless stars; the lower-left one at its stamp's true centre (between
    pixels for even stamps), the others shifted by whole pixels, as in GREAT3."""
    field = np.zeros((3 * size, 3 * size), np.float32)
    shifts = np.array(jax.random.randint(key, (9, 2), -3, 4))
    shifts[0] = 0
    for idx in range(9):
        j, i = divmod(idx, 3)
        star = star_stamp(fwhm, pixel_scale, size, tuple(float(v) for v in shifts[idx]))
        field[j * size : (j + 1) * size, i * size : (i + 1) * size] = star
    return field


def _write_columns(path: Path, names: list[str], rows: np.ndarray, fmt: str) -> None:
    """A GREAT3 ``.txt`` table: one ``# name`` line per column, then the rows."""
    text = "".join(f"# {name}\n" for name in names)
    text += "".join(fmt.format(*row) + "\n" for row in rows)
    path.write_text(text)


def write_subfield(
    key,
    folder: Path,
    subfield: int,
    branch: Branch,
    grid: int,
    morphology: str = "structured",
    fwhm: float | None = None,
) -> dict:
    """Write one subfield's GREAT3 files into ``folder``; return its truth.

    As GREAT3 does: the subfield is its own field with its own seeing (``fwhm``
    overrides the draw, arcsec); the galaxies of a constant-shear branch come as
    90°-rotated twins, scattered over the grid by a random permutation; the
    lower-left star is drawn at the stamp's true centre. A multi-epoch branch has 6
    epochs, each with its own PSF (within ±10 % of the subfield's FWHM), a random
    sub-pixel dither of every galaxy (``epoch_dither-SSS-E.txt``), a sixth of the
    flux and noise σ/√6, so the coadd has the flux and noise of one epoch of the
    other branches.

    Returns a dict: ``psf_fwhm`` (per epoch), ``sigma`` (coadd noise rms), ``shear``,
    ``clean`` (noiseless stamps of epoch 0, grid order), ``params`` (grid order),
    ``twin`` (grid position of each stamp's rotated twin, −1 without one) and
    ``dithers`` ((epochs, 2) dx, dy in pixels).
    """
    size, scale = branch.stamp_size, branch.pixel_scale
    k_psf, k_noise_level, k_gal, k_shear, k_noise, k_star, k_perm, k_epoch = jax.random.split(
        key, 8
    )
    if fwhm is None and branch.obs == "ground":
        fwhm = 0.5 + 0.45 * float(jax.random.uniform(k_psf))  # GREAT3 ground seeing
    elif fwhm is None:
        fwhm = 2.5 * scale * (1.0 + 0.2 * float(jax.random.uniform(k_psf)))
    sigma = float(0.8 + 0.4 * jax.random.uniform(k_noise_level))
    n = grid * grid
    params = draw_galaxies(k_gal, n, scale, sigma, branch.has_pairs, morphology)
    g = np.asarray(jax.random.uniform(k_shear, (2,), minval=-0.05, maxval=0.05))
    params["e1"], params["e2"] = apply_shear(params["e1"], params["e2"], g[0], g[1])
    if "comp_e1" in params:  # disk-plane structure is sheared with the disk's ellipticity
        params["comp_e1"], params["comp_e2"] = apply_shear(
            params["comp_e1"], params["comp_e2"], g[0], g[1]
        )
    # Grid position k holds galaxy perm[k]: twins (2m, 2m + 1) land anywhere.
    perm = np.asarray(jax.random.permutation(k_perm, n))
    params = {k: v[perm] for k, v in params.items()}
    twin = np.full(n, -1)
    if branch.has_pairs:
        where = np.argsort(perm)  # grid position of each galaxy
        partner = perm ^ 1  # the other member of galaxy perm[k]'s pair
        ok = partner < n
        twin[ok] = where[partner[ok]]
    epochs = branch.epochs
    k_fw, k_dith = jax.random.split(k_epoch)
    if epochs > 1:
        fwhms = fwhm * (1.0 + 0.1 * np.asarray(jax.random.uniform(k_fw, (epochs,), minval=-1)))
        dithers = np.asarray(jax.random.uniform(k_dith, (epochs, 2), minval=-0.5, maxval=0.5))
    else:
        fwhms, dithers = np.array([fwhm]), np.zeros((1, 2))
    big = size - 1 if size % 2 == 0 else size - 2  # odd kernel that fits a stamp
    sub = f"{subfield:03d}"
    jj, ii = np.divmod(np.arange(n), grid)
    clean0 = None
    for e, (fw, (dx, dy)) in enumerate(zip(fwhms, dithers, strict=True)):
        check_interrupt()
        moved = dict(params, flux=params["flux"] / epochs)
        moved["center_x"] = params["center_x"] + dx * scale
        moved["center_y"] = params["center_y"] + dy * scale
        clean = render_galaxies(moved, moffat_psf(fw, MOFFAT_BETA, scale, size=min(31, big)),
                                size, scale)  # fmt: skip
        if e == 0:
            clean0 = clean
        k_e = jax.random.fold_in(k_noise, e)
        noise = (sigma / np.sqrt(epochs)) * np.asarray(
            jax.random.normal(k_e, (grid * size, grid * size), jnp.float32)
        )
        image = clean.reshape(grid, grid, size, size).transpose(0, 2, 1, 3).reshape(noise.shape)
        fits.PrimaryHDU((image + noise).astype(np.float32)).writeto(
            folder / f"image-{sub}-{e}.fits"
        )
        star = _starfield(float(fw), scale, size, jax.random.fold_in(k_star, e))
        fits.PrimaryHDU(star).writeto(folder / f"starfield_image-{sub}-{e}.fits")
        if epochs > 1:
            _write_columns(folder / f"epoch_dither-{sub}-{e}.txt", ["x_dither", "y_dither"],
                           np.array([[dx, dy]]), "{:.6f} {:.6f}")  # fmt: skip
    x = ii * size + size // 2
    y = jj * size + size // 2
    ids = subfield * 1_000_000 + np.arange(n)
    cols = [
        fits.Column(name="x", format="D", array=x.astype(float)),
        fits.Column(name="y", format="D", array=y.astype(float)),
        fits.Column(name="ID", format="K", array=ids),
    ]
    fits.BinTableHDU.from_columns(cols).writeto(folder / f"galaxy_catalog-{sub}.fits")
    _write_columns(folder / f"galaxy_catalog-{sub}.txt", ["x", "y", "ID"],
                   np.stack([x, y, ids], axis=1), "{} {} {}")  # fmt: skip
    return {
        "psf_fwhm": fwhms if epochs > 1 else float(fwhm),
        "sigma": sigma,
        "shear": g,
        "clean": clean0 * epochs,
        "params": params,
        "twin": twin,
        "dithers": dithers,
    }


def make_branch_tarball(
    key,
    out_dir: Path,
    branch: Branch,
    n_subfields: int,
    grid: int = 100,
    morphology: str = "structured",
    fwhm: list[float] | None = None,
) -> tuple[Path, list[dict]]:
    """Write ``<branch>.tar.gz`` (layout ``experiment/obs/shear/``) into ``out_dir``.

    ``morphology`` picks the galaxy population (:func:`draw_galaxies`); ``fwhm``
    optionally fixes each subfield's seeing, arcsec. Returns the tarball path and
    the per-subfield truth dicts of :func:`write_subfield`. Branches whose PSF
    varies over the field (variable_psf, full) are not generated: lensgen does not
    read them.
    """
    if not branch.constant_psf:
        raise ConfigError(f"no synthetic {branch.name}: its PSF varies over the field")
    if fwhm is not None and len(fwhm) != n_subfields:
        raise ConfigError(f"fwhm has {len(fwhm)} values for {n_subfields} subfields")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{branch.name}.tar.gz"
    truths = []
    part = out_dir / f".{target.name}.part"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        folder = Path(tmp)
        try:
            # Level 1: noise barely compresses, so higher levels only cost time.
            with tarfile.open(part, "w:gz", compresslevel=1) as tar:
                for sub, k in enumerate(jax.random.split(key, n_subfields)):
                    check_interrupt()
                    seeing = None if fwhm is None else fwhm[sub]
                    truths.append(write_subfield(k, folder, sub, branch, grid, morphology, seeing))
                    for f in sorted(folder.iterdir()):
                        check_interrupt()
                        tar.add(f, arcname=f"{branch.folder}/{f.name}", recursive=False)
                        f.unlink()
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)  # an unfinished tarball is never left behind
            raise
    return target, truths
