import torch
import torch.nn.functional as F

from dacer2.algo.networks import NoisePredictor, TwinDistributionalCritic


def test_twin_critic_matches_two_separate_mlps():
    torch.manual_seed(0)
    critic = TwinDistributionalCritic(5, 2, (8, 8))
    obs, act = torch.randn(7, 5), torch.randn(7, 2)
    mu, sigma = critic(obs, act)
    assert mu.shape == sigma.shape == (2, 7)
    for i in range(2):
        h = torch.cat([obs, act], -1)
        for layer in critic.layers[:-1]:
            h = F.mish(h @ layer.weight[i] + layer.bias[i])
        out = h @ critic.layers[-1].weight[i] + critic.layers[-1].bias[i]
        assert torch.allclose(mu[i], out[:, 0], atol=1e-6)
        assert torch.allclose(sigma[i], F.softplus(out[:, 1]), atol=1e-6)
    assert torch.all(sigma > 0)
    assert not torch.allclose(mu[0], mu[1])  # members are initialised independently


def test_detached_critic_passes_action_gradient_only():
    critic = TwinDistributionalCritic(3, 2, (8,))
    act = torch.randn(4, 2, requires_grad=True)
    mu, _ = critic(torch.randn(4, 3), act, detach_params=True)
    mu.sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def test_noise_predictor_shapes_and_time_dependence():
    torch.manual_seed(0)
    net = NoisePredictor(4, 3, (16, 16))
    emb = net.step_embeddings(5)
    assert emb.shape == (5, 16)
    obs, x = torch.randn(7, 4), torch.randn(7, 3)
    out0, out4 = net(obs, x, emb[0]), net(obs, x, emb[4])
    assert out0.shape == (7, 3)
    assert not torch.allclose(out0, out4)
    per_sample = net(obs, x, emb[0].expand(7, -1))
    assert torch.allclose(out0, per_sample)
