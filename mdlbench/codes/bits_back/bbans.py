"""BB-ANS: bits-back coding of images with a VAE and an ANS stack (Townsend, Bird & Barber 2019).

Pixels are **binarised** (1 where the 8-bit value >= ``binarize_threshold``, default 128) and
modelled by Bernoulli likelihoods p(x|z). Each latent dimension is cut into K = 2**latent_bits
buckets of equal mass under the N(0, 1) prior, so the discretised prior is uniform over buckets;
a latent is represented by its bucket's centre (the prior's median inside the bucket). The
discretised posterior q(k|x) of a dimension is the mass that N(mu, sigma^2) puts on bucket k.

Encoding image x (the stack starts with seeded random clean bits)::

    z <- pop  under q(z|x)      (takes about -log2 q(z|x) bits off the stack)
    push x under p(x|z)         (-log2 p(x|z) bits)
    push z under p(z)           (L * latent_bits bits: uniform over buckets)

Decoding runs the images in reverse: pop z under p(z), pop x under p(x|z), push z back under
q(z|x), which returns the bits the encoder popped. Net bits = final - initial stack size, whose
expectation is the discretised negative ELBO, sum over images of
E_q[-log2 p(x|z)] + KL(q(z|x) || p(z)). The decoder ends with exactly the clean bits.

Bit-exactness: both sides compute every table with the same two jitted functions on the same
inputs at batch size 1 (:class:`Coder`), in float32; the bucket grid comes from a jitted jax
function too (no scipy: its version is not pinned). The VAE's parameters are side information:
rounded to ``weights_dtype``, xz-compressed, shipped in the container and counted; the encoder
codes with exactly the rounded parameters. Training on the coded images is therefore allowed
(the decoder never retrains), and the parameter bits are reported beside the data bits.
"""

from __future__ import annotations

import hashlib
import lzma
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdlbench.coding import ans
from mdlbench.codes.bits_back.config import BitsBackConfig
from mdlbench import optim
from mdlbench.errors import ContainerError, DecodeError
from mdlbench.models.vae import VAE, build_vae

# Seed streams: every random choice is (config seed, stream).
STREAM_INIT = 0
STREAM_TRAIN = 1
STREAM_CLEAN = 2
STREAM_ELBO = 3
STREAM_CANARY = 99
_LN2 = math.log(2.0)
_P_MIN = np.float32(2.0 ** -24)


# ---- data ---------------------------------------------------------------------------------
def binarize(x_uint8: np.ndarray, threshold: int) -> np.ndarray:
    """``N x D`` uint8 0/1 pixels: 1 where the 8-bit value is >= ``threshold``."""
    x = np.asarray(x_uint8)
    return (x.reshape(len(x), -1) >= threshold).astype(np.uint8)


def pixels_sha256(bits_NxD: np.ndarray) -> str:
    """sha256 of the binary pixels as one uint8 (0/1) per pixel, images in coding order."""
    return hashlib.sha256(np.ascontiguousarray(bits_NxD, dtype=np.uint8).tobytes()).hexdigest()


# ---- the bucket grid ----------------------------------------------------------------------
@jax.jit
def _half_grid(probs_lower):
    return jax.scipy.special.ndtri(probs_lower)


def bucket_grid(latent_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges (K+1) and centres (K) of K = 2**latent_bits equal-mass buckets of N(0, 1), float32.

    Only the lower half is computed (ndtri is most accurate there); the upper half mirrors it,
    so the grid is exactly symmetric. Edges 0 and K are -inf and +inf.
    """
    k = 2 ** latent_bits
    half = k // 2
    kk = np.arange(1, half, dtype=np.float64)
    lower_edges = np.asarray(_half_grid(jnp.asarray((kk / k).astype(np.float32))), np.float32)
    lower_centres = np.asarray(_half_grid(jnp.asarray(((np.arange(half) + 0.5) / k).astype(np.float32))), np.float32)
    edges = np.concatenate([[-np.inf], lower_edges, [0.0], -lower_edges[::-1], [np.inf]]).astype(np.float32)
    if k == 2:
        edges = np.array([-np.inf, 0.0, np.inf], np.float32)
    centres = np.concatenate([lower_centres, -lower_centres[::-1]]).astype(np.float32)
    return edges, centres


# ---- parameters as side information --------------------------------------------------------
def param_template(module: VAE, n_pixels: int) -> Any:
    """Shapes and order of the parameters (no compilation, no values)."""
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, n_pixels), jnp.float32),
                          jnp.zeros((1, module.latent), jnp.float32))["params"]


def pack_params(params: Any, dtype: str) -> bytes:
    """Parameters in tree order as little-endian ``dtype`` values, xz-compressed (preset 9e)."""
    leaves = jax.tree_util.tree_leaves(params)
    raw = b"".join(np.asarray(a, np.float32).astype(np.dtype(dtype).newbyteorder("<")).tobytes() for a in leaves)
    return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def unpack_params(blob: bytes, template: Any, dtype: str) -> Any:
    """Inverse of :func:`pack_params`: float32 parameters holding exactly the shipped values."""
    try:
        raw = lzma.decompress(blob, format=lzma.FORMAT_XZ)
    except lzma.LZMAError as e:
        raise ContainerError(f"the VAE parameters in the container do not decompress ({e})") from None
    dt = np.dtype(dtype).newbyteorder("<")
    leaves, treedef = jax.tree_util.tree_flatten(template)
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    if len(raw) != sum(sizes) * dt.itemsize:
        raise ContainerError(f"the container holds {len(raw)} bytes of parameters, the model needs "
                             f"{sum(sizes) * dt.itemsize}")
    flat = np.frombuffer(raw, dt).astype(np.float32)
    out, pos = [], 0
    for leaf, size in zip(leaves, sizes):
        out.append(jnp.asarray(flat[pos:pos + size].reshape(leaf.shape)))
        pos += size
    return jax.tree_util.tree_unflatten(treedef, out)


# ---- training --------------------------------------------------------------------------------
def _neg_elbo_nats(module: VAE, params, x_BxD, key):
    """Per-image continuous -ELBO in nats with one reparameterised sample: BCE + KL to N(0, I)."""
    mu, sigma = module.apply({"params": params}, x_BxD, method=VAE.encode)
    z = mu + sigma * jax.random.normal(key, mu.shape, mu.dtype)
    logits = module.apply({"params": params}, z, method=VAE.decode)
    rec = optax.sigmoid_binary_cross_entropy(logits, x_BxD).sum(-1)
    kl = (0.5 * (mu * mu + sigma * sigma - 1.0) - jnp.log(sigma)).sum(-1)
    return rec, kl


def train_vae(module: VAE, bits_NxD: np.ndarray, cfg: BitsBackConfig,
              log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Maximises the ELBO of the coded images with Adam; returns float32 parameters and a record.

    Minibatch order and noise come from (seed, STREAM_TRAIN); the images live on device as
    uint8 and are gathered by index inside the compiled step (one compilation).
    """
    t0 = time.perf_counter()
    n, d = bits_NxD.shape
    tc = cfg.train
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), STREAM_INIT)
    params = module.init(key, jnp.zeros((1, d), jnp.float32), jnp.zeros((1, module.latent), jnp.float32))["params"]
    tx = optim.adam(tc.lr)
    opt_state = tx.init(params)
    X = jnp.asarray(bits_NxD)
    noise_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), STREAM_TRAIN)

    @jax.jit
    def step(params, opt_state, idx, i):
        def loss_fn(p):
            rec, kl = _neg_elbo_nats(module, p, X[idx].astype(jnp.float32), jax.random.fold_in(noise_key, i))
            return (rec + kl).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    bs = min(tc.batch_size, n)
    steps = max(1, math.ceil(tc.epochs * n / bs))
    rng = np.random.default_rng([cfg.seed, STREAM_TRAIN])
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * bs // n))])[:steps * bs]
    order = order.reshape(steps, bs).astype(np.int32)
    losses = []
    report = max(1, steps // 10)
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jnp.asarray(order[i]), i)
        if (i + 1) % report == 0 or i + 1 == steps:
            losses.append(float(loss))
            if log:
                log(f"train step {i + 1}/{steps}: -ELBO {float(loss) / _LN2 / d:.4f} bits/dim")
    return params, {"steps": steps, "batch_size": bs, "final_loss_bits_per_dim": losses[-1] / _LN2 / d,
                    "loss_curve_bits_per_dim": [v / _LN2 / d for v in losses], "time_s": time.perf_counter() - t0}


def continuous_neg_elbo_bits(module: VAE, params, bits_NxD: np.ndarray, seed: int, samples: int,
                             chunk: int = 500) -> dict[str, float]:
    """Sum over images of the continuous -ELBO in bits (``samples`` reparameterised z per image)."""
    n = len(bits_NxD)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), STREAM_ELBO + 1000)

    @jax.jit
    def f(x, k):
        rec, kl = _neg_elbo_nats(module, params, x.astype(jnp.float32), k)
        return rec, kl

    rec_total = kl_total = 0.0
    for a in range(0, n, chunk):
        x = jnp.asarray(bits_NxD[a:a + chunk])
        recs = []
        for s in range(samples):
            rec, kl = f(x, jax.random.fold_in(key, a * samples + s))
            recs.append(np.asarray(rec, np.float64))
        rec_total += float(np.mean(recs, axis=0).sum())
        kl_total += float(np.asarray(kl, np.float64).sum())
    return {"bits": (rec_total + kl_total) / _LN2, "reconstruction_bits": rec_total / _LN2, "kl_bits": kl_total / _LN2}


# ---- the coder: the two table functions both sides share -----------------------------------
class Coder:
    """The compiled probability tables of BB-ANS, identical for encoder and decoder.

    Args:
      module: the VAE.
      params: its (shipped) parameters.
      latent_bits: log2 of the buckets per latent dimension.
    """

    def __init__(self, module: VAE, params: Any, latent_bits: int):
        self.module = module
        self.params = params
        self.latent = module.latent
        self.n_pixels = module.n_pixels
        self.k = 2 ** latent_bits
        self.latent_bits = latent_bits
        edges, centres = bucket_grid(latent_bits)
        self.edges, self.centres = jnp.asarray(edges), jnp.asarray(centres)
        self.grid_sha256 = hashlib.sha256(edges.tobytes() + centres.tobytes()).hexdigest()

        def q_tables(params, x_1xD, edges_K1, centres_K):
            mu, sigma = module.apply({"params": params}, x_1xD, method=VAE.encode)
            mu, sigma = mu[0][:, None], sigma[0][:, None]
            a = (edges_K1[None, :] - mu) / sigma
            below = jax.scipy.special.ndtr(a[:, 1:]) - jax.scipy.special.ndtr(a[:, :-1])
            # Above the mean, CDF differences cancel catastrophically in float32 (both near 1);
            # survival-function differences are accurate there.
            above = jax.scipy.special.ndtr(-a[:, :-1]) - jax.scipy.special.ndtr(-a[:, 1:])
            return jnp.where(centres_K[None, :] > mu, above, below).astype(jnp.float32)

        def pixel_probs(params, z_idx_BxL, centres_K):
            logits = module.apply({"params": params}, centres_K[z_idx_BxL], method=VAE.decode)
            return jnp.clip(jax.nn.sigmoid(logits.astype(jnp.float32)), _P_MIN, 1 - _P_MIN)

        self._q = jax.jit(q_tables)
        self._p = jax.jit(pixel_probs)

    def q(self, x_D: np.ndarray) -> np.ndarray:
        """``L x K`` float32 bucket probabilities of q(z|x) for one image (batch size 1)."""
        return np.asarray(self._q(self.params, jnp.asarray(x_D.astype(np.float32)[None]), self.edges, self.centres))

    def p(self, z_L: np.ndarray) -> np.ndarray:
        """``D`` float32 probabilities of a 1 for each pixel given bucket indices (batch size 1)."""
        return np.asarray(self._p(self.params, jnp.asarray(np.asarray(z_L, np.int32)[None]), self.centres))[0]

    def p_batch(self, z_BxL: np.ndarray) -> np.ndarray:
        """``B x D`` pixel probabilities for a batch of latents (ideal reference only, never coded)."""
        return np.asarray(self._p(self.params, jnp.asarray(np.asarray(z_BxL, np.int32)), self.centres))

    def canary(self, seed: int) -> str:
        """sha256 of the grid and of both tables on fixed inputs: the decoder's arithmetic check."""
        rng = np.random.default_rng([seed, STREAM_CANARY])
        x = rng.integers(0, 2, self.n_pixels).astype(np.uint8)
        z = rng.integers(0, self.k, self.latent).astype(np.int32)
        h = hashlib.sha256(self.grid_sha256.encode())
        h.update(self.q(x).tobytes())
        h.update(self.p(z).tobytes())
        return h.hexdigest()


def _sample_buckets(tables_LxK: np.ndarray, u_SxL: np.ndarray) -> np.ndarray:
    """Inverse-CDF samples (S x L) from the floored, normalised tables (ideal reference only)."""
    t = ans.floor_tables(tables_LxK).astype(np.float64)
    cdf_LxK = np.cumsum(t, -1)
    cdf_LxK /= cdf_LxK[:, -1:]
    k_SxL = (cdf_LxK[None, :, :] < u_SxL[:, :, None]).sum(-1)
    return np.minimum(k_SxL, t.shape[1] - 1).astype(np.int32)


# ---- encode / decode -------------------------------------------------------------------------
def encode(coder: Coder, bits_NxD: np.ndarray, seed: int, initial_words: int = 0, elbo_samples: int = 4,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """BB-ANS-encodes every image; returns the stack's words and the bits, real and ideal.

    Args:
      coder: the shared tables.
      bits_NxD: binary images in coding order.
      seed: seeds the clean bits and the reference's Monte-Carlo samples.
      initial_words: clean 32-bit words to start with; 0 = the smallest multiple of 8 that
        leaves :data:`ans.RESERVE_BITS` after the first image's pop (found by retrying).
      elbo_samples: bucket samples per image for the discretised -ELBO reference.
      log: progress callback.

    Returns:
      ``words`` (final stack), ``initial_words``, ``initial_bits``, ``final_bits``, ideal
      components summed over images, ``neg_elbo_disc_bits`` (the discretised -ELBO estimate,
      exact KL + Monte-Carlo reconstruction) and its standard error, and timings.
    """
    n_words = initial_words or 8
    while True:
        try:
            return _encode(coder, bits_NxD, seed, n_words, elbo_samples, log)
        except ans.StackUnderflow as e:
            if initial_words:
                raise
            n_words = max(n_words + 8, ans.round_up_words(e.needed_bits))


def _encode(coder: Coder, bits_NxD: np.ndarray, seed: int, n_words: int, elbo_samples: int,
            log: Callable[[str], None] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    n, d = bits_NxD.shape
    stack = ans.AnsStack(ans.clean_words(n_words, seed, STREAM_CLEAN), seal=True)
    initial_bits = stack.num_bits()
    rng = np.random.default_rng([seed, STREAM_ELBO])
    popped = pixel = kl = rec_mc = 0.0
    rec_sq = 0.0
    curve = []
    every = max(1, n // 20)
    log_k = math.log2(coder.k)
    for i in range(n):
        x = bits_NxD[i]
        q = coder.q(x)
        before = stack.num_valid_bits()
        z = stack.pop_categorical(q)
        if i == 0 and stack.num_valid_bits() < ans.RESERVE_BITS:
            consumed = before - stack.num_valid_bits()
            raise ans.StackUnderflow("the first image's latent needs more clean bits",
                                     consumed + ans.RESERVE_BITS + 64)
        p1 = coder.p(z)
        stack.push_bernoulli(x, p1)
        stack.push_uniform(z, coder.k)
        popped += float(ans.categorical_bits(q, z).sum())
        pixel += float(ans.bernoulli_bits(x, p1).sum())
        # Reference: exact KL of the discretised q to the uniform bucket prior, and the
        # reconstruction term averaged over fresh bucket samples (batched: not coded).
        t = ans.floor_tables(q).astype(np.float64)
        t /= t.sum(-1, keepdims=True)
        kl += float((t * np.log2(np.maximum(t, 1e-300) * coder.k)).sum())
        zs = _sample_buckets(q, rng.random((elbo_samples, coder.latent)))
        r = ans.bernoulli_bits(np.broadcast_to(x, (elbo_samples, d)), coder.p_batch(zs)).sum(-1)
        rec_mc += float(r.mean())
        rec_sq += float(r.var(ddof=1) / elbo_samples) if elbo_samples > 1 else 0.0
        if (i + 1) % every == 0 or i + 1 == n:
            curve.append({"images": i + 1, "net_bits": stack.num_bits() - initial_bits,
                          "net_bits_per_dim": (stack.num_bits() - initial_bits) / ((i + 1) * d)})
            if log and ((i + 1) % (every * 5) == 0 or i + 1 == n):
                log(f"encoded {i + 1}/{n} images: {curve[-1]['net_bits_per_dim']:.4f} net bits/dim, "
                    f"{time.perf_counter() - t0:.1f} s")
    words = stack.words()
    return {"words": words, "initial_words": n_words, "initial_bits": initial_bits,
            "final_bits": stack.num_bits(), "final_valid_bits": stack.num_valid_bits(),
            "ideal_popped_bits": popped, "ideal_pixel_bits": pixel, "ideal_prior_bits": n * coder.latent * log_k,
            "ideal_path_bits": pixel + n * coder.latent * log_k - popped,
            "neg_elbo_disc_bits": rec_mc + kl, "neg_elbo_disc_kl_bits": kl, "neg_elbo_disc_rec_bits": rec_mc,
            "neg_elbo_disc_stderr_bits": math.sqrt(rec_sq), "curve": curve, "encode_s": time.perf_counter() - t0}


def decode(coder: Coder, words: np.ndarray, n: int, seed: int, initial_words: int,
           log: Callable[[str], None] | None = None) -> tuple[np.ndarray, float]:
    """Recovers every image in reverse order and checks that the clean bits come back exactly.

    Returns:
      ``(bits_NxD uint8, decode_s)``.

    Raises:
      DecodeError: the stack does not end in the seeded clean bits.
    """
    t0 = time.perf_counter()
    stack = ans.AnsStack(words)
    out = np.zeros((n, coder.n_pixels), np.uint8)
    every = max(1, n // 4)
    for i in reversed(range(n)):
        z = stack.pop_uniform(coder.latent, coder.k)
        x = stack.pop_bernoulli(coder.p(z)).astype(np.uint8)
        stack.push_categorical(z, coder.q(x))
        out[i] = x
        if log and (n - i) % every == 0:
            log(f"decoded {n - i}/{n} images, {time.perf_counter() - t0:.1f} s")
    if not ans.returned_to(stack, ans.clean_words(initial_words, seed, STREAM_CLEAN)):
        raise DecodeError("BB-ANS decode did not return the stack to its clean bits: the tables differ "
                          "from the encoder's")
    return out, time.perf_counter() - t0


def build(cfg: BitsBackConfig, n_pixels: int) -> VAE:
    """The configured VAE module."""
    return build_vae(cfg.model, n_pixels)
