"""The Flax wrapper of the sentence encoder equals the pure function and trains inside a user's
linen model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimtext import flax_modules
from mimtext.models import sentence_ae

CFG = sentence_ae.ModelConfig(vocab_size=12, embed_dim=6, hidden_dim=8, latent_dim=3)
TOKENS = jnp.array([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]], jnp.int32)
LENGTHS = jnp.array([5, 3], jnp.int32)


def test_encoder_equals_the_pure_function_on_a_runs_parameters():
  params = sentence_ae.init_params(jax.random.PRNGKey(3), CFG)
  encoder = flax_modules.SentenceEncoder(CFG)
  mean, log_var = encoder.apply(flax_modules.SentenceEncoder.variables_from(params), TOKENS,
                                LENGTHS)
  post = sentence_ae.encode(params, TOKENS, LENGTHS, CFG)
  np.testing.assert_array_equal(mean, sentence_ae.posterior_code(post))
  np.testing.assert_array_equal(log_var, post.log_var)
  fresh = encoder.init(jax.random.PRNGKey(3), TOKENS, LENGTHS)
  assert jax.tree.structure(fresh["params"]["sentence_ae"]) == jax.tree.structure(params)


class _Classifier(nn.Module):
  """A user's model: the sentence encoder, then a linear layer over its code."""

  @nn.compact
  def __call__(self, tokens, lengths):
    mean, _ = flax_modules.SentenceEncoder(CFG, name="encoder")(tokens, lengths)
    return nn.Dense(2)(mean)


def test_a_users_model_trains_through_the_encoder():
  model = _Classifier()
  variables = model.init(jax.random.PRNGKey(0), TOKENS, LENGTHS)
  labels = jnp.array([0, 1])

  def loss(params):
    logits = model.apply({"params": params}, TOKENS, LENGTHS)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.grad(loss)(variables["params"])
  embed_grad = grads["encoder"]["sentence_ae"]["embed"]
  # gradients reach the encoder's parameters
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(embed_grad)) > 0
  tx = optax.adam(0.1)
  params, state = variables["params"], tx.init(variables["params"])
  before = float(loss(params))
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 0.5 * before
