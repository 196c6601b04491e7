"""The shared core: deep and compressed factorizations, init, discrepant rates, subspaces."""

from deeplora.factorization.compress import compress
from deeplora.factorization.deep import DeepFactorization
from deeplora.factorization.init import gaussian_, init_, orthogonal_, scaled_identity_
from deeplora.factorization.optim import discrepant_param_groups, make_optimizer
from deeplora.factorization.subspace import (
    invariant_subspace_deviation,
    largest_principal_angle_cos,
    largest_repeated_cluster,
    numerical_rank,
    orthonormal_union,
    principal_angles,
    singular_values,
    top_singular_subspaces,
)

__all__ = [
    "DeepFactorization",
    "compress",
    "discrepant_param_groups",
    "gaussian_",
    "init_",
    "invariant_subspace_deviation",
    "largest_principal_angle_cos",
    "largest_repeated_cluster",
    "make_optimizer",
    "numerical_rank",
    "orthogonal_",
    "orthonormal_union",
    "principal_angles",
    "scaled_identity_",
    "singular_values",
    "top_singular_subspaces",
]
