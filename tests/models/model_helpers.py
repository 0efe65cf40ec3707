"""Helpers shared by the model tests: a fixed batch and a short training
loop (with SAND's estimator steps when a model has them)."""

import torch


def fixed_batch(data):
    user, pos = data["user", "rates", "item"].edge_index
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(data["item"].num_nodes, pos.shape, generator=gen)
    return user, pos, neg


def train(model, data, steps=200, lr=1e-2, batch_size=256):
    """Adam steps on random BPR batches; return the fixed-batch losses
    before and after."""
    torch.manual_seed(0)
    user, pos, neg = fixed_batch(data)
    est = list(getattr(model, "estimator_parameters", list)())
    est_ids = {id(p) for p in est}
    opt = torch.optim.Adam(
        [p for p in model.parameters() if id(p) not in est_ids], lr=lr)
    est_opt = torch.optim.Adam(est, lr=lr) if est else None
    before = model.loss(user, pos, neg)[0].item()
    for step in range(steps):
        if step % 10 == 0:
            model.on_epoch_start(step // 10)
        idx = torch.randint(user.numel(), (batch_size,))
        batch = user[idx], pos[idx], neg[idx]
        if est_opt is not None:
            est_opt.zero_grad()
            model.estimator_step(*batch).backward()
            est_opt.step()
        opt.zero_grad()
        model.loss(*batch)[0].backward()
        opt.step()
    return before, model.loss(user, pos, neg)[0].item()


def assert_fused_matches_edge_index(fused, plain, batch, seed=None,
                                    atol=1e-6):
    """Give ``plain`` (``fused=False``) the weights of ``fused``, then
    check that both give the same loss and the same gradient of every
    parameter on ``batch``; with ``seed``, both draw the same random
    numbers. Return the fused model's loss parts."""
    plain.load_state_dict(fused.state_dict())
    results = []
    for model in (fused, plain):
        if seed is not None:
            torch.manual_seed(seed)
        loss, parts = model.loss(*batch)
        loss.backward()
        results.append((loss, parts))
    assert torch.allclose(results[0][0], results[1][0], atol=atol)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=atol), name
    return results[0][1]
