"""A small MLP variational auto-encoder for binarised images (flax modules only).

The encoder maps a flattened binary image ``x_BxD`` (float32 0/1) to the mean and standard
deviation of a diagonal Gaussian posterior ``q(z|x)`` over ``L`` latent dimensions; the decoder
maps a latent ``z_BxL`` to Bernoulli logits ``logits_BxD`` of ``p(x|z)``. The prior is N(0, I).
No optimiser, no loss, no logging here: training and coding live in ``mdlbench.codes.bits_back``.
Sizes are picked by name from :data:`VAES`; parameter counts are always measured from the
initialised parameters, never read from the name.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from mdlbench.config import ConfigError

# Posterior scales below this are floored: a narrower q than a thousandth of the prior's scale
# buys nothing once latents are discretised, and keeps log(sigma) finite in the KL.
MIN_SIGMA = 1e-3


class VAE(nn.Module):
    """One-hidden-layer MLP encoder and decoder.

    Attributes:
      hidden: width of the hidden layer of the encoder and of the decoder.
      latent: number of latent dimensions L.
      n_pixels: number of (binary) pixels D of one flattened image.
    """

    hidden: int
    latent: int
    n_pixels: int

    def setup(self):
        self.enc_hidden = nn.Dense(self.hidden)
        self.enc_out = nn.Dense(2 * self.latent)
        self.dec_hidden = nn.Dense(self.hidden)
        self.dec_out = nn.Dense(self.n_pixels)

    def encode(self, x_BxD):
        """Posterior parameters ``(mu_BxL, sigma_BxL)`` of q(z|x)."""
        h = nn.relu(self.enc_hidden(x_BxD))
        out = self.enc_out(h)
        mu_BxL, raw_BxL = out[:, : self.latent], out[:, self.latent:]
        # softplus rather than exp: no overflow for large raw outputs early in training.
        sigma_BxL = nn.softplus(raw_BxL) + jnp.float32(MIN_SIGMA)
        return mu_BxL, sigma_BxL

    def decode(self, z_BxL):
        """Bernoulli logits ``logits_BxD`` of p(x|z)."""
        return self.dec_out(nn.relu(self.dec_hidden(z_BxL)))

    def __call__(self, x_BxD, z_BxL):
        """Both halves (used to initialise every parameter at once)."""
        return self.encode(x_BxD), self.decode(z_BxL)


@dataclasses.dataclass(frozen=True)
class VAESpec:
    """A named VAE size.

    Attributes:
      hidden: hidden width of encoder and decoder.
      latent: latent dimensions.
    """

    hidden: int
    latent: int


VAES: dict[str, VAESpec] = {
    "vae_tiny": VAESpec(hidden=32, latent=4),
    "vae_small": VAESpec(hidden=256, latent=32),
    "vae_medium": VAESpec(hidden=512, latent=50),
}


def build_vae(name: str, n_pixels: int) -> VAE:
    """The flax module for the named size.

    Raises:
      ConfigError: unknown name.
    """
    if name not in VAES:
        raise ConfigError(f"unknown VAE {name!r}; known: {', '.join(VAES)}")
    spec = VAES[name]
    return VAE(spec.hidden, spec.latent, n_pixels)
