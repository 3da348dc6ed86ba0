"""N:M weights: the grouping along the input dimension, a portable packed form (kept values +
their positions in each group) and the semi-structured (2:4) form of PyTorch's sparse kernels.

Groups of m consecutive weights along the input dimension: a linear weight (out, in) is read
row by row; a convolution weight (out, in, kh, kw) as its GEMM matrix over channels-last
input, (out, kh·kw·in) with the input channel innermost — the layout in which NVIDIA's sparse
tensor cores see a convolution.
"""
from __future__ import annotations

import torch

# CUTLASS semi-structured kernels (PyTorch's SparseSemiStructuredTensorCUTLASS): the sparse
# matrix must have a multiple of 32 rows and of 64 columns for 16-bit floats
SEMI_STRUCTURED_MIN_ROWS, SEMI_STRUCTURED_MIN_COLS = 32, 64


def gemm_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as the (out, reduction) matrix its groups run along (a copy for convs)."""
    if weight.dim() == 4:
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return weight.reshape(weight.shape[0], -1)


def from_gemm_matrix(matrix: torch.Tensor, shape) -> torch.Tensor:
    """The inverse of `gemm_matrix`."""
    if len(shape) == 4:
        out, inp, kh, kw = shape
        return matrix.reshape(out, kh, kw, inp).permute(0, 3, 1, 2).contiguous()
    return matrix.reshape(shape)


def grouped(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """A weight-shaped tensor as (groups, m), groups in GEMM-matrix order."""
    return gemm_matrix(tensor).reshape(-1, m)


def ungrouped(groups: torch.Tensor, shape) -> torch.Tensor:
    """The inverse of `grouped`."""
    return from_gemm_matrix(groups.reshape(shape[0], -1), shape)


def pack_nm(weight: torch.Tensor, mask: torch.Tensor, n: int, m: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, positions): per group the n kept weights in ascending position and their
    positions in the group (uint8), shapes (groups, n).  ValueError when a group does not
    keep exactly n."""
    keep = grouped(mask != 0, m)
    counts = keep.sum(dim=1)
    if not bool((counts == n).all()):
        raise ValueError(f"mask is not {n}:{m}: groups keep {int(counts.min())} to "
                         f"{int(counts.max())} weights")
    # a stable sort puts the kept entries first, in ascending position
    positions = torch.sort(keep.to(torch.int8), dim=1, descending=True,
                           stable=True).indices[:, :n]
    values = grouped(weight, m).gather(1, positions)
    return values, positions.to(torch.uint8)


def unpack_nm(values: torch.Tensor, positions: torch.Tensor, shape, m: int) -> torch.Tensor:
    """The dense weight of a packed n:m weight (zeros elsewhere)."""
    groups = torch.zeros((values.shape[0], m), dtype=values.dtype, device=values.device)
    groups.scatter_(1, positions.long(), values)
    return ungrouped(groups, shape)


def semi_structured_problem(matrix: torch.Tensor) -> str | None:
    """Why a GEMM matrix cannot take PyTorch's 2:4 semi-structured form (None: it can):
    at most 2 nonzeros in every aligned group of 4, and the CUTLASS shape multiples."""
    rows, cols = matrix.shape
    if rows % SEMI_STRUCTURED_MIN_ROWS or cols % SEMI_STRUCTURED_MIN_COLS:
        return (f"shape {rows}×{cols} is not a multiple of {SEMI_STRUCTURED_MIN_ROWS}×"
                f"{SEMI_STRUCTURED_MIN_COLS}")
    if int((matrix.reshape(-1, 4) != 0).sum(dim=1).max()) > 2:
        return "more than 2 nonzeros in a group of 4"
    return None


def semi_structured_cutlass(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed, meta): the tensors `torch.sparse.to_sparse_semi_structured` stores for a 2:4
    matrix with the CUTLASS backend — the kept values (rows × cols/2) and the reordered int16
    metadata — computed by PyTorch's own conversion (runs on CPU too)."""
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_from_dense_cutlass)

    return sparse_semi_structured_from_dense_cutlass(matrix.contiguous())


def dense_from_cutlass(packed: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense matrix of a CUTLASS semi-structured pair (PyTorch's inverse conversion)."""
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_to_dense_cutlass)

    return sparse_semi_structured_to_dense_cutlass(packed, meta)
