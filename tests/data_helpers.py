"""Edits of a dataset's interactions shared by the tests."""


def swap_with_train(data, attr):
    """Return a copy of ``data`` whose first ``attr`` (``val_edge_index``
    or ``test_edge_index``) pair and a train pair of the same user trade
    items: the same sizes, other interactions."""
    data = data.clone()
    store = data["user", "rates", "item"]
    held_out = store[attr].clone()
    train = store.edge_index.clone()
    edge = int((train[0] == held_out[0, 0]).nonzero()[0])
    train[1, edge], held_out[1, 0] = int(held_out[1, 0]), int(train[1, edge])
    store.edge_index, store[attr] = train, held_out
    return data
