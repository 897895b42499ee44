"""Running the per-image work of builds and dedup on a Ray cluster (the ``pinid[ray]`` extra).

Importing this package does not import Ray; :func:`ray_session` does, and says
how to install it if it is missing.
"""

from .jobs import RayOptions, build_index_on_ray, dedup_on_ray, ray_session

__all__ = ["RayOptions", "build_index_on_ray", "dedup_on_ray", "ray_session"]
