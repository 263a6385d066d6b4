"""The train step: update order, target update, fused K-step calls, non-finite stop."""

import numpy as np
import pytest
import tensorflow as tf

from iql_tf import losses
from iql_tf.agent import IQLAgent
from iql_tf.errors import UserError
from iql_tf.replay_buffer import ReplayBuffer

OBS, ACT = 3, 2


def make_agent(**kwargs) -> IQLAgent:
    defaults = dict(hidden_dims=(16, 16), expectile=0.8, beta=3.0, batch_size=32, value_lr=0.05,
                    critic_lr=0.05, actor_lr=0.05, actor_cosine_decay=False, seed=7)
    defaults.update(kwargs)
    return IQLAgent(OBS, ACT, actor_decay_steps=100, **defaults)


def make_transitions(n=64, seed=0, rewards=None):
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(n, OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32) if rewards is None else rewards,
        "next_observations": rng.normal(size=(n, OBS)).astype(np.float32),
        "terminals": (rng.uniform(size=n) < 0.2).astype(np.float32),
    }


def batch_of(transitions):
    batch = {key: tf.constant(value) for key, value in transitions.items() if key != "terminals"}
    batch["masks"] = tf.constant(1.0 - transitions["terminals"])
    return batch


def weights(model):
    return [v.numpy() for v in model.variables]


def manual_update(agent: IQLAgent, batch, actor_uses_updated_value=True):
    """The reference order, spelled out with the losses: value, actor, critics, target."""
    obs, act = batch["observations"], batch["actions"]
    target_q = tf.minimum(*agent.target_critic(obs, act))
    old_v = agent.value(obs)
    with tf.GradientTape() as tape:
        value_loss = losses.expectile_loss(target_q - agent.value(obs), agent.expectile)
    grads = tape.gradient(value_loss, agent.value.trainable_variables)
    agent.value_optimizer.apply_gradients(zip(grads, agent.value.trainable_variables))
    v = agent.value(obs) if actor_uses_updated_value else old_v
    weights_awr = losses.awr_weights(target_q - v, agent.beta)
    with tf.GradientTape() as tape:
        actor_loss = losses.awr_actor_loss(agent.actor.distribution(obs).log_prob(act), weights_awr)
    grads = tape.gradient(actor_loss, agent.actor.trainable_variables)
    agent.actor_optimizer.apply_gradients(zip(grads, agent.actor.trainable_variables))
    y = losses.td_target(batch["rewards"], batch["masks"], agent.value(batch["next_observations"]), agent.discount)
    with tf.GradientTape() as tape:
        critic_loss = losses.critic_loss(*agent.critic(obs, act), y)
    grads = tape.gradient(critic_loss, agent.critic.trainable_variables)
    agent.critic_optimizer.apply_gradients(zip(grads, agent.critic.trainable_variables))
    for target, source in zip(agent.target_critic.variables, agent.critic.variables):
        target.assign(0.995 * target + 0.005 * source)


def test_update_follows_the_reference_order():
    batch = batch_of(make_transitions())
    agent, reference, wrong_order = make_agent(), make_agent(), make_agent()
    # Make the target critics differ from the critics, so that using the wrong one shows.
    for agent_ in (agent, reference, wrong_order):
        for variable in agent_.target_critic.variables:
            variable.assign(variable * 0.5)
    agent.update(batch, dropout_seed=tf.constant([0, 0]))
    manual_update(reference, batch)
    manual_update(wrong_order, batch, actor_uses_updated_value=False)
    for name in ("value", "actor", "critic", "target_critic"):
        for got, want in zip(weights(getattr(agent, name)), weights(getattr(reference, name))):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    # The check is sensitive: an actor step with the value from before step 1 gives other weights.
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(weights(agent.actor), weights(wrong_order.actor)))


def test_target_critics_move_by_polyak_averaging_only():
    agent = make_agent()
    for variable in agent.target_critic.variables:
        variable.assign(tf.zeros_like(variable))
    agent.update(batch_of(make_transitions()), dropout_seed=tf.constant([0, 0]))
    for target, source in zip(weights(agent.target_critic), weights(agent.critic)):
        np.testing.assert_allclose(target, 0.005 * source, rtol=1e-5, atol=1e-8)
    assert len(agent.target_critic.trainable_variables) == len(agent.critic.trainable_variables)


def test_fused_k_steps_equal_k_single_calls():
    buffer = ReplayBuffer(make_transitions(n=200))
    fused, single = make_agent(), make_agent()
    fused_metrics = fused.train(buffer, 5)
    for _ in range(5):
        single.train(buffer, 1)
    assert int(fused.step) == int(single.step) == 5
    for name in ("value", "actor", "critic", "target_critic"):
        for a, b in zip(weights(getattr(fused, name)), weights(getattr(single, name))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    assert set(fused_metrics) >= {"value_loss", "actor_loss", "critic_loss", "awr_weight_mean", "actor_lr"}


def test_actor_learning_rate_follows_a_cosine_decay_to_zero():
    agent = make_agent(actor_cosine_decay=True, actor_lr=3e-4)
    buffer = ReplayBuffer(make_transitions())
    assert agent.train(buffer, 50)["actor_lr"] == pytest.approx(3e-4 * 0.5 * (1 + np.cos(np.pi * 0.5)), rel=1e-4)
    assert agent.train(buffer, 50)["actor_lr"] == pytest.approx(0.0, abs=1e-9)
    assert float(agent.value_optimizer.learning_rate) == pytest.approx(0.05)


def test_adam_uses_optax_epsilon():
    agent = make_agent()
    assert agent.value_optimizer.epsilon == agent.critic_optimizer.epsilon == agent.actor_optimizer.epsilon == 1e-8


def test_training_stops_at_the_first_non_finite_loss():
    rewards = np.full(64, np.nan, np.float32)
    agent = make_agent()
    metrics = agent.train(ReplayBuffer(make_transitions(rewards=rewards)), 10)
    assert int(agent.step) == 1
    assert np.isnan(metrics["critic_loss"])


def test_actor_dropout_is_active_in_the_actor_loss():
    # With dropout, two updates from the same weights but different dropout seeds differ (CORL once
    # forgot to pass the training flag); without dropout they are equal.
    batch = batch_of(make_transitions())
    for rate, should_differ in ((0.5, True), (None, False)):
        a, b = make_agent(actor_dropout_rate=rate), make_agent(actor_dropout_rate=rate)
        a.update(batch, dropout_seed=tf.constant([1, 1]))
        b.update(batch, dropout_seed=tf.constant([2, 2]))
        differ = not all(np.allclose(x, y) for x, y in zip(weights(a.actor), weights(b.actor)))
        assert differ == should_differ


def test_checkpoint_holds_every_variable_of_the_training_state(tmp_path):
    agent = make_agent(actor_dropout_rate=0.1)
    agent.train(ReplayBuffer(make_transitions()), 3)
    path = tf.train.Checkpoint(agent=agent).save(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("agent/")]
    models = (agent.value, agent.critic, agent.target_critic, agent.actor)
    optimizers = (agent.value_optimizer, agent.critic_optimizer, agent.actor_optimizer)
    expected = sum(len(m.variables) for m in models) + sum(len(o.variables) for o in optimizers) + 2  # step, rng
    assert len(saved) == expected

    restored = make_agent(actor_dropout_rate=0.1, seed=99)
    tf.train.Checkpoint(agent=restored).restore(path).assert_existing_objects_matched()
    for name in ("value", "critic", "target_critic", "actor"):
        for a, b in zip(weights(getattr(agent, name)), weights(getattr(restored, name))):
            np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(agent.generator.state.numpy(), restored.generator.state.numpy())


@pytest.mark.parametrize("binding, value, message", [
    ("hidden_dims", 3, "IQLAgent.hidden_dims = 3"), ("hidden_dims", (), "IQLAgent.hidden_dims"),
    ("expectile", 1.0, "IQLAgent.expectile"), ("beta", -1.0, "IQLAgent.beta"), ("discount", 1.5, "IQLAgent.discount"),
    ("target_update_rate", 0.0, "IQLAgent.target_update_rate"), ("critic_lr", 0.0, "IQLAgent.learning rates"),
    ("actor_dropout_rate", 1.0, "IQLAgent.actor_dropout_rate"), ("batch_size", 0, "IQLAgent.batch_size"),
])
def test_out_of_range_hyperparameters_are_user_errors(binding, value, message):
    with pytest.raises(UserError, match=message):
        make_agent(**{binding: value})
