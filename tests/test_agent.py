"""The train step: update order, target update, fused and single updates, the ensemble, non-finite stop."""

import numpy as np
import pytest
import tensorflow as tf

from iql_tf import losses
from iql_tf.agent import IQLAgent
from iql_tf.errors import UserError
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import AgentSettings

OBS, ACT = 3, 2
BATCH = 32  # make_agent's batch size


def make_agent(seeds=(7,), **kwargs) -> IQLAgent:
    defaults = dict(hidden_dims=(16, 16), expectile=0.8, beta=3.0, batch_size=BATCH, value_lr=0.05,
                    critic_lr=0.05, actor_lr=0.05, actor_cosine_decay=False, jit_compile=False)
    defaults.update(kwargs)
    return IQLAgent(OBS, ACT, AgentSettings(**defaults), actor_decay_steps=100, seeds=seeds)


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
    """One member's batch: [1, B, ...]."""
    batch = {key: tf.constant(value[None]) for key, value in transitions.items() if key != "terminals"}
    batch["masks"] = tf.constant(1.0 - transitions["terminals"][None])
    return batch


def weights(model):
    return [v.numpy() for v in model.variables]


def manual_update(agent: IQLAgent, batch, actor_uses_updated_value=True):
    """The reference order, spelled out with the losses: value, actor, critics, target."""
    obs, act = batch["observations"], batch["actions"]
    target_q = tf.minimum(*agent.target_critic(obs, act))
    old_v = agent.value(obs)
    with tf.GradientTape() as tape:
        value_loss = tf.reduce_sum(losses.expectile_loss(target_q - agent.value(obs), agent.settings.expectile))
    grads = tape.gradient(value_loss, agent.value.trainable_variables)
    agent.value_optimizer.apply_gradients(zip(grads, agent.value.trainable_variables))
    v = agent.value(obs) if actor_uses_updated_value else old_v
    weights_awr = losses.awr_weights(target_q - v, agent.settings.beta)
    with tf.GradientTape() as tape:
        actor_loss = tf.reduce_sum(losses.awr_actor_loss(agent.actor.distribution(obs).log_prob(act), weights_awr))
    grads = tape.gradient(actor_loss, agent.actor.trainable_variables)
    agent.actor_optimizer.apply_gradients(zip(grads, agent.actor.trainable_variables))
    y = losses.td_target(batch["rewards"], batch["masks"], agent.value(batch["next_observations"]), agent.settings.discount)
    with tf.GradientTape() as tape:
        critic_loss = tf.reduce_sum(losses.critic_loss(*agent.critic(obs, act), y))
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
    agent.update(batch, dropout_seeds=tf.constant([[0, 0]]))
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
    agent.update(batch_of(make_transitions()), dropout_seeds=tf.constant([[0, 0]]))
    for target, source in zip(weights(agent.target_critic), weights(agent.critic)):
        np.testing.assert_allclose(target, 0.005 * source, rtol=1e-5, atol=1e-8)
    assert len(agent.target_critic.trainable_variables) == len(agent.critic.trainable_variables)


def test_fused_k_steps_equal_k_single_calls():
    buffer = ReplayBuffer(make_transitions(n=200), BATCH)
    fused, single = make_agent(), make_agent()
    fused_metrics = fused.run_updates(buffer, 5)
    for _ in range(5):
        single.run_updates(buffer, 1)
    assert int(fused.step) == int(single.step) == 5
    for name in ("value", "actor", "critic", "target_critic"):
        for a, b in zip(weights(getattr(fused, name)), weights(getattr(single, name))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    assert set(fused_metrics) >= {"value_loss", "actor_loss", "critic_loss", "awr_weight_mean", "actor_lr"}


def test_xla_and_tensorflow_kernels_compute_the_same_updates():
    # XLA and TensorFlow's kernels fuse and order the same float32 sums differently, so their results differ by
    # rounding, and how far two runs drift apart after many steps depends on the processor and on how each
    # path is built for it (at this test's learning rate of 0.05, 20 steps gave 4e-5 here, 7e-5 without oneDNN,
    # 9e-5 elsewhere). So: one update from identical weights, compared tightly (measured 1.4e-7 to 2.4e-7: float32
    # rounding of O(1) weights, which Adam's normalised first step carries over unamplified when no gradient is
    # near its epsilon, as none is in this batch); then 20 updates at the paper's learning rate, where the
    # drift stays at rounding level (3e-7 measured) and a tolerance of 30 times that holds on any processor, and
    # their losses, which average the whole batch and agree to a relative 1e-5 (2.6e-7 measured).
    buffer = ReplayBuffer(make_transitions(n=200), BATCH)
    plain, xla = make_agent(jit_compile=False), make_agent(jit_compile=True)
    plain.run_updates(buffer, 1)
    xla.run_updates(buffer, 1)
    for name in ("value", "actor", "critic", "target_critic"):
        for a, b in zip(weights(getattr(plain, name)), weights(getattr(xla, name))):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    paper = dict(value_lr=3e-4, critic_lr=3e-4, actor_lr=3e-4)
    plain, xla = make_agent(jit_compile=False, **paper), make_agent(jit_compile=True, **paper)
    for updates in (19, 1):  # fused, then single
        plain_metrics, xla_metrics = plain.run_updates(buffer, updates), xla.run_updates(buffer, updates)
        for name in ("value_loss", "actor_loss", "critic_loss"):
            np.testing.assert_allclose(xla_metrics[name], plain_metrics[name], rtol=1e-5, err_msg=name)
    for name in ("value", "actor", "critic", "target_critic"):
        for a, b in zip(weights(getattr(plain, name)), weights(getattr(xla, name))):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)


def test_an_ensemble_of_three_trains_each_member_as_its_own_run():
    # Own initialisation, batches, dropout masks and target critics: after 50 updates each member of an
    # ensemble of seeds 3, 4, 5 holds the weights of the single-seed run with that seed. Both run on the same
    # kernels, which batch the members' matmuls; that differs from one member's only in rounding (1.8e-7 after
    # these 50 updates, measured), far inside the tolerance, while a member trained on another's batches, masks
    # or targets would be off by the size of a step (1e-3).
    buffer = ReplayBuffer(make_transitions(n=300), BATCH)
    settings = dict(actor_dropout_rate=0.1, actor_cosine_decay=True, value_lr=3e-3, critic_lr=3e-3, actor_lr=3e-3)
    ensemble = make_agent(seeds=(3, 4, 5), **settings)
    metrics = ensemble.run_updates(buffer, 50)
    assert metrics["critic_loss"].shape == (3,)
    for member, seed in enumerate((3, 4, 5)):
        alone = make_agent(seeds=(seed,), **settings)
        alone_metrics = alone.run_updates(buffer, 50)
        np.testing.assert_allclose(metrics["critic_loss"][member], alone_metrics["critic_loss"][0], rtol=1e-4)
        for name in ("value", "actor", "critic", "target_critic"):
            for a, b in zip(weights(getattr(alone, name)), weights(getattr(ensemble, name))):
                # One member has no member axis ([in, out] kernels, [out] biases); log_std keeps it.
                np.testing.assert_allclose(a.reshape(-1), b[member].reshape(-1), rtol=1e-4, atol=1e-5,
                                           err_msg=f"{name} of seed {seed}")
    # And the members differ from one another.
    assert not np.allclose(weights(ensemble.actor)[0][0], weights(ensemble.actor)[0][1])


def test_layer_norm_and_constant_std_options_keep_members_apart_and_the_std_at_one():
    # OGBench's IQL settings: layer normalisation after each hidden activation of V and Q (scale and offset per
    # member), and a policy std fixed at 1.
    buffer = ReplayBuffer(make_transitions(n=300), BATCH)
    settings = dict(critic_layer_norm=True, constant_std=True, value_lr=3e-3, critic_lr=3e-3, actor_lr=3e-3)
    ensemble = make_agent(seeds=(3, 4), **settings)
    hidden = ensemble.critic.q1.trunk(tf.random.stateless_normal([2, 5, OBS + ACT], seed=[1, 2])).numpy()
    np.testing.assert_allclose(hidden.mean(-1), 0.0, atol=1e-5)  # normalised features (scale 1, offset 0 at start)
    np.testing.assert_allclose(hidden.std(-1), 1.0, atol=1e-3)
    ensemble.run_updates(buffer, 20)
    alone = make_agent(seeds=(4,), **settings)
    alone.run_updates(buffer, 20)
    for a, b in zip(weights(alone.critic), weights(ensemble.critic)):
        np.testing.assert_allclose(a.reshape(-1), b[1].reshape(-1), rtol=1e-4, atol=1e-5)
    norms = [v for v in ensemble.value.trainable_variables if "norm" in v.path]
    assert norms and all(not np.allclose(v.numpy(), v.numpy()[:1]) for v in norms)  # trained, and apart
    np.testing.assert_array_equal(ensemble.actor.std().numpy(), 1.0)
    assert all(v is not ensemble.actor.log_std for v in ensemble.actor.trainable_variables)
    learned = make_agent(seeds=(3,), value_lr=3e-3, critic_lr=3e-3, actor_lr=3e-3)
    learned.run_updates(buffer, 20)
    assert not np.allclose(learned.actor.std().numpy(), 1.0)  # the paper's std is learned


def test_kernel_init_reaches_every_network_and_the_target_starts_as_the_critic():
    glorot, orthogonal = make_agent(kernel_init="glorot_uniform"), make_agent()
    for name in ("value", "critic", "actor"):
        for agent, is_glorot in ((glorot, True), (orthogonal, False)):
            kernels = [v.numpy() for v in getattr(agent, name).trainable_variables if "kernel" in v.path]
            bounds = [np.sqrt(6.0 * (0.01 if "mean" in v.path else 1.0) / sum(v.shape))
                      for v in getattr(agent, name).trainable_variables if "kernel" in v.path]
            within = [np.abs(kernel).max() <= bound for kernel, bound in zip(kernels, bounds)]
            assert all(within) if is_glorot else not any(within), (name, is_glorot)
    for a, b in zip(weights(glorot.critic), weights(glorot.target_critic)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("update_order", ["joint", "sequential"])
def test_a_joint_update_sees_only_the_parameters_from_before_it(update_order):
    # 'joint' (OGBench's IQL baselines): neither the value step nor the target critics reach the actor's step,
    # the value step does not reach the critics', and the Polyak step starts from the critics before theirs.
    # 'sequential' (the IQL reference): each of these reaches. One update per agent, each changing one thing.
    batch, seeds = batch_of(make_transitions()), tf.constant([[0, 0]])
    base, bigger_value_step, bigger_critic_step, moved_target = (
        make_agent(update_order=update_order, **changed) for changed in ({}, {"value_lr": 0.5}, {"critic_lr": 0.5}, {}))
    for variable in moved_target.target_critic.variables:
        variable.assign(variable * 0.5)
    for agent in (base, bigger_value_step, bigger_critic_step, moved_target):
        agent.update(batch, seeds)
    differs = lambda a, b: not all(np.array_equal(x, y) for x, y in zip(weights(a), weights(b)))  # noqa: E731
    reached = {"value step -> actor": differs(base.actor, bigger_value_step.actor),
               "target critics -> actor": differs(base.actor, moved_target.actor),
               "value step -> critics": differs(base.critic, bigger_value_step.critic),
               "critic step -> target critics": differs(base.target_critic, bigger_critic_step.target_critic)}
    assert reached == {name: update_order == "sequential" for name in reached}


def test_actor_learning_rate_follows_a_cosine_decay_to_zero():
    agent = make_agent(actor_cosine_decay=True, actor_lr=3e-4)
    buffer = ReplayBuffer(make_transitions(), BATCH)
    assert agent.run_updates(buffer, 50)["actor_lr"][0] == pytest.approx(1.5e-4, rel=1e-4)  # half way: half
    assert agent.run_updates(buffer, 50)["actor_lr"][0] == pytest.approx(0.0, abs=1e-9)
    assert float(agent.value_optimizer.learning_rate) == pytest.approx(0.05)


def test_adam_steps_with_the_references_epsilon():
    # A first Adam step on a gradient of 1e-8 moves a weight by lr * sqrt(1 - 0.999) / (1 - 0.9) * 0.1 g /
    # (sqrt(0.001) g + eps): 1.5327e-3 with optax's epsilon 1e-8, 1.5327e-4 with Keras' default 1e-7.
    agent = make_agent()
    for optimizer, model in ((agent.value_optimizer, agent.value), (agent.critic_optimizer, agent.critic),
                             (agent.actor_optimizer, agent.actor)):
        variable = model.trainable_variables[0]
        before = variable.numpy().copy()
        optimizer.apply_gradients([(tf.fill(variable.shape, 1e-8), variable)])
        np.testing.assert_allclose(before - variable.numpy(), 1.5327e-3, rtol=1e-3)


def test_training_stops_at_the_first_non_finite_loss():
    rewards = np.full(64, np.nan, np.float32)
    agent = make_agent()
    metrics = agent.run_updates(ReplayBuffer(make_transitions(rewards=rewards), BATCH), 10)
    assert int(agent.step) == 1
    assert np.isnan(metrics["critic_loss"][0])


def test_actor_dropout_is_active_in_the_actor_loss():
    # With dropout, two updates from the same weights but different dropout seeds differ (CORL once
    # forgot to pass the training flag); without dropout they are equal.
    batch = batch_of(make_transitions())
    for rate, should_differ in ((0.5, True), (None, False)):
        a, b = make_agent(actor_dropout_rate=rate), make_agent(actor_dropout_rate=rate)
        a.update(batch, dropout_seeds=tf.constant([[1, 1]]))
        b.update(batch, dropout_seeds=tf.constant([[2, 2]]))
        differ = not all(np.allclose(x, y) for x, y in zip(weights(a.actor), weights(b.actor)))
        assert differ == should_differ


def test_checkpoint_holds_every_variable_of_the_training_state(tmp_path):
    agent = make_agent(seeds=(7, 8), actor_dropout_rate=0.1)
    agent.run_updates(ReplayBuffer(make_transitions(), BATCH), 3)
    path = tf.train.Checkpoint(agent=agent).save(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("agent/")]
    models = (agent.value, agent.critic, agent.target_critic, agent.actor)
    optimizers = (agent.value_optimizer, agent.critic_optimizer, agent.actor_optimizer)
    expected = sum(len(m.variables) for m in models) + sum(len(o.variables) for o in optimizers) + 1 + 2  # step, rngs
    assert len(saved) == expected

    restored = make_agent(seeds=(7, 8), actor_dropout_rate=0.1)
    tf.train.Checkpoint(agent=restored).restore(path).assert_existing_objects_matched()
    for name in ("value", "critic", "target_critic", "actor"):
        for a, b in zip(weights(getattr(agent, name)), weights(getattr(restored, name))):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for a, b in zip(agent.generators, restored.generators):
        np.testing.assert_array_equal(a.state.numpy(), b.state.numpy())


def test_online_step_appends_then_trains_and_exploration_is_seeded():
    transitions = make_transitions(n=10)
    buffer = ReplayBuffer(transitions, BATCH, capacity=12)
    agent = make_agent()
    new = {"observations": np.full(OBS, 3.0, np.float32), "actions": np.full(ACT, 0.5, np.float32),
           "rewards": np.float32(2.0), "masks": np.float32(0.0), "next_observations": np.ones(OBS, np.float32)}
    next_observations = np.ones([1, 1, OBS], np.float32)
    _, action = agent.online_update_fn(buffer)(buffer.pack(new), next_observations, tf.constant(0.1))
    assert int(buffer.size) == 11 and int(agent.step) == 1
    rows = buffer.online_transitions(0, 1)
    assert rows["rewards"].tolist() == [2.0] and rows["masks"].tolist() == [0.0]
    for key in ("observations", "actions", "next_observations"):  # packed and unpacked in the same order
        np.testing.assert_array_equal(rows[key][0], new[key])
    # The next action comes from the updated policy, drawn as `explore` draws it.
    twin, twin_buffer = make_agent(), ReplayBuffer(transitions, BATCH, capacity=12)
    twin_buffer.add(twin_buffer.pack(new))
    twin.run_updates(twin_buffer, 1)
    np.testing.assert_allclose(action, twin.explore(next_observations, tf.constant(0.1)).numpy(), atol=1e-5)
    observations = tf.zeros([1, 4, OBS])
    first, again = make_agent().explore(observations, tf.constant(0.1)), make_agent().explore(observations,
                                                                                              tf.constant(0.1))
    np.testing.assert_array_equal(first.numpy(), again.numpy())  # the same seed explores alike
    assert np.all(np.abs(first.numpy()) <= 1.0)
    assert not np.allclose(first.numpy(), make_agent().act(observations).numpy())  # sampled, not the mean


@pytest.mark.parametrize("binding, value, message", [
    ("hidden_dims", 3, "IQLAgent.hidden_dims = 3"), ("hidden_dims", (), "IQLAgent.hidden_dims"),
    ("expectile", 1.0, "IQLAgent.expectile"), ("beta", -1.0, "IQLAgent.beta"), ("discount", 1.5, "IQLAgent.discount"),
    ("target_update_rate", 0.0, "IQLAgent.target_update_rate"), ("critic_lr", 0.0, "IQLAgent.critic_lr"),
    ("actor_dropout_rate", 1.0, "IQLAgent.actor_dropout_rate"), ("batch_size", 0, "IQLAgent.batch_size"),
    ("jit_compile", "yes", "IQLAgent.jit_compile"),
])
def test_out_of_range_hyperparameters_are_user_errors(binding, value, message):
    with pytest.raises(UserError, match=message):
        make_agent(**{binding: value})


def test_the_replay_buffer_masks_are_one_minus_terminals():
    transitions = make_transitions(n=4)
    transitions["terminals"] = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    buffer = ReplayBuffer(transitions, 64, capacity=6)
    assert buffer.columns["masks"].numpy()[:4].tolist() == [0.0, 1.0, 1.0, 0.0]
    batch = buffer.sample([tf.random.Generator.from_seed(0)])
    terminal_rows = batch["observations"][0].numpy()[:, 0] == transitions["observations"][0, 0]
    assert np.all(batch["masks"][0].numpy()[terminal_rows] == 0.0)  # sampled with their rows


def test_exploration_samples_the_policy_at_temperature_one():
    agent = make_agent()
    agent.actor.log_std.assign(tf.fill(agent.actor.log_std.shape, float(np.log(0.2))))
    observations = tf.zeros([1, 4000, OBS])  # one state, many draws
    mean = agent.act(observations).numpy()[0, 0]
    drawn = agent.explore(observations, tf.constant(0.0)).numpy()[0]
    assert np.all(np.abs(mean) < 0.3)  # far enough from the bounds that clipping does not shape the draws
    np.testing.assert_allclose(drawn.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(drawn.std(axis=0), [0.2, 0.2], rtol=0.06)  # the policy's own std, not 0


def test_each_seed_draws_its_own_batches():
    # Generator.from_seed(s + 1) is from_seed(s) one counter step on: neighbouring seeds shared their batch
    # stream, shifted by two draws. Each seed's stream must be its own at every small offset.
    streams = []
    for seed in (3, 4):
        generator = make_agent(seeds=(seed,)).generators[0]
        streams.append(np.concatenate([generator.uniform([256], 0, 300000, tf.int64).numpy() for _ in range(20)]))
    a, b = streams
    for offset in range(0, 9):
        assert np.mean(a[offset:offset + 4000] == b[:4000]) < 0.01, offset
        assert np.mean(b[offset:offset + 4000] == a[:4000]) < 0.01, offset


def test_no_two_layers_of_neighbouring_seeds_start_alike():
    # Seeding layer i by seed + i (and the critic by seed + 1000, ...) gave seed s's layer i + 1 the kernel of
    # seed s + 1's layer i. Across seeds 0-2 and all networks, every kernel must be its own.
    kernels = []
    for seed in (0, 1, 2):
        agent = make_agent(seeds=(seed,), hidden_dims=(8, 8, 8))
        for network in (agent.value, agent.critic, agent.actor):
            kernels += [(seed, variable.path, variable.numpy()) for variable in network.trainable_variables
                        if variable.name.endswith("kernel") and variable.shape == (8, 8)]
    assert len(kernels) == 3 * 8  # 2 hidden-to-hidden kernels in each of value, Q1, Q2 and the actor
    for i, (seed_a, name_a, a) in enumerate(kernels):
        for seed_b, name_b, b in kernels[i + 1:]:
            assert not np.allclose(np.abs(a), np.abs(b)), (seed_a, name_a, seed_b, name_b)
