"""The stand-in seed case shared by the inference tests: an SIS lens of a Gaussian-blob
source whose decoder is differentiable in z, so the tests do not depend on a trained
network, and ``FAST``, small inference settings for it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lensgen.infer.run import InferConfig
from lensgen.io.fits import Observation
from lensgen.lensing.instrument import add_noise, gaussian_psf, noise_map
from lensgen.lensing.render import Scene, make_renderer
from lensgen.source.model import interpol_params

NPIX, PIXSCALE = 32, 0.18


@dataclasses.dataclass(frozen=True)
class BlobSource:
    """Stand-in SourceModel: z sets the ellipticity (e1, e2) of a Gaussian blob."""

    has_flow: bool = False
    latent_dim: int = 2
    image_shape: tuple[int, int] = (24, 24)
    pixel_scale: float = 0.1
    flux_scale: float = 1.0

    def decode(self, z):
        h, w = self.image_shape
        v, u = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")
        e1, e2 = 0.3 * jnp.tanh(z[0]), 0.3 * jnp.tanh(z[1])
        # Second moments s²(1 + e1), s²(1 − e1), s² e2 with s = 3 pixels.
        quu, qvv, quv = 9.0 * (1 + e1), 9.0 * (1 - e1), 9.0 * e2
        det = quu * qvv - quv**2
        return jnp.exp(-0.5 * (qvv * u**2 - 2 * quv * u * v + quu * v**2) / det)

    def from_normal(self, u):
        return 0.8 * u + 0.1 if self.has_flow else u

    def prior_log_prob(self, z):
        return jnp.sum(jax.scipy.stats.norm.logpdf(z))

    def sample(self, key, n):
        return self.from_normal(jax.random.normal(key, (n, self.latent_dim)))


TRUTH = {
    "lens.0.theta_E": 2.3,
    "lens.0.center_x": 0.02,
    "lens.0.center_y": -0.03,
    "source.0.flux": 40.0,
    "source.0.center_x": 0.08,
    "source.0.center_y": 0.05,
    "source.0.size": 0.15,
}
Z_TRUE = np.array([0.4, -0.6])


def blob_observation(seed=1, source_model=BlobSource()):
    """An NPIX × NPIX SIS lens of the stand-in source, Poisson + background noise."""
    scene = Scene(lens=("SIS",), source=("INTERPOL",), shape=(NPIX, NPIX), pixel_scale=PIXSCALE)
    t = TRUTH
    src = {k.split(".")[2]: v for k, v in t.items() if k.startswith("source")}
    src = interpol_params(source_model.decode(jnp.asarray(Z_TRUE)), **src)
    params = {
        "lens": [{k.split(".")[2]: v for k, v in t.items() if k.startswith("lens")}],
        "source": [src],
        "lens_light": [],
    }
    psf = gaussian_psf(0.2, PIXSCALE)
    model = make_renderer(scene, jnp.asarray(psf))(params)
    image = add_noise(jax.random.key(seed), model, 1000.0, 0.05)
    return Observation(
        image=np.asarray(image),
        pixel_scale=PIXSCALE,
        psf=psf,
        noise_map=np.asarray(noise_map(model, 1000.0, 0.05)),
        exptime=1000.0,
        background_rms=0.05,
        model=np.asarray(model),
        truth=dict(TRUTH),
        scene={"lens": ["SIS"], "source": ["INTERPOL"], "lens_light": []},
    )


FAST = InferConfig(
    num_chains=2,
    num_warmup=100,
    num_samples=150,
    map_steps=600,
    map_restarts=4,
    map_lr=0.05,
    svi_steps=600,
    svi_lr=0.01,
    svi_samples=500,
    max_tree_depth=6,
)
