"""Helpers shared by the model tests: a fixed batch, a short training
loop (with SAND's estimator steps when a model has them) and dense
by-hand references (normalised adjacency, propagation, BPR, InfoNCE)."""

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


def dense_norm_adjacency(data, edge_index=None):
    """D^-1/2 A D^-1/2 of the (U+I)-node user-item graph, by hand.

    ``edge_index`` holds the (user, item) train pairs R; the data's
    ``('user', 'rates', 'item')`` edges by default.
    """
    num_users = data["user"].num_nodes
    num = num_users + data["item"].num_nodes
    if edge_index is None:
        edge_index = data["user", "rates", "item"].edge_index
    user, item = edge_index
    adj = torch.zeros(num, num)
    adj[user, item + num_users] = 1.0
    adj[item + num_users, user] = 1.0
    deg = adj.sum(1).clamp(min=1)
    return adj / deg.sqrt().view(-1, 1) / deg.sqrt().view(1, -1)


def dense_propagation(edge_index, edge_weight, num):
    """The dense S with S[target, source] = w, so that a propagation step
    (each node sums its weighted in-neighbours) is ``S @ x``."""
    adj = torch.zeros(num, num)
    adj.index_put_((edge_index[1], edge_index[0]), edge_weight.float(),
                   accumulate=True)
    return adj


def layer_mean(adj, x, num_layers):
    """mean_{l=0..L} adj^l x, by repeated dense products."""
    layers = [x]
    for _ in range(num_layers):
        layers.append(adj @ layers[-1])
    return torch.stack(layers).mean(0)


def bpr_by_hand(user, pos, neg):
    """-mean log sigmoid(<u, i+> - <u, i->) of embedding rows."""
    s_pos, s_neg = (user * pos).sum(-1), (user * neg).sum(-1)
    return -torch.nn.functional.logsigmoid(s_pos - s_neg).mean()


def info_nce_by_hand(a, b, tau, weight=None, symmetric=False):
    """InfoNCE with cosine logits and in-batch negatives as a
    cross-entropy: row n of cos(a, b) / tau has its positive at column n;
    with ``symmetric`` the columns (b -> a) too, averaged; the per-row
    losses weighted by ``weight`` and averaged over rows."""
    F = torch.nn.functional
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / tau
    target = torch.arange(a.size(0))
    loss = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), target,
                                             reduction="none"))
    if weight is not None:
        loss = weight * loss
    return loss.mean()
