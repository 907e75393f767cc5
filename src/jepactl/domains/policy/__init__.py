"""Robot imitation learning (ACT-JEPA): demonstrations, policies, closed-loop rollouts."""
