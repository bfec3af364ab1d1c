"""What runs on a developer's machine, apart from what a worker runs: the Astria simulator, a
throwaway Redis, and the demo. Installed with the project for users' own tests; not in the
Docker image."""

from astria_local.redis_server import RedisServerError, ThrowawayRedis, ThrowawaySentinel, free_port
from astria_local.simulator import AstriaSimulator, SimConfig

__all__ = ["AstriaSimulator", "RedisServerError", "SimConfig", "ThrowawayRedis",
           "ThrowawaySentinel", "free_port"]
