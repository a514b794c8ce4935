"""0.2.7 behaviours of tsgu-ops' helpers that the 0.2.7 release's own tests rely on."""

from __future__ import annotations

import pytest
import torch

from tsgu_ops.formats import _sort_coo_indices


@pytest.mark.parametrize("rows", [2, 3])
def test_sort_coo_indices_accepts_an_empty_index_list_of_any_dtype(rows: int) -> None:
    # 0.2.7's encoder tests build an empty expected index list as torch.tensor([]).reshape(2, -1),
    # a float tensor, and sort it; there is nothing to sort, so its dtype does not matter
    empty = torch.tensor([]).reshape(rows, -1)
    out, perm = _sort_coo_indices(empty)
    assert out.shape == (rows, 0) and out.dtype == empty.dtype
    assert perm.shape == (0,) and perm.dtype == torch.int64


def test_sort_coo_indices_still_rejects_non_integer_entries() -> None:
    with pytest.raises(ValueError, match=r"indices\.dtype"):
        _sort_coo_indices(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
