"""LiDAR point clouds: readers, pillar BEV grids and AD-L-JEPA."""
