"""`Runtime`: what a process needs to work on jobs, built once per process (after any fork)."""

from __future__ import annotations

from functools import cached_property, lru_cache

import redis
from requests.adapters import BaseAdapter

from worker.astria.client import AstriaClient
from worker.constants import Keys
from worker.errors import ConfigError
from worker.net.egress import Egress
from worker.net.storage import Storage, open_storage
from worker.net.tracing import Tracing
from worker.settings import Settings, get_settings
from worker.store.batches import Batches
from worker.store.channels import Channels
from worker.store.clock import RedisClock
from worker.store.connections import redis_client
from worker.store.copies import CopyStore
from worker.store.dispatch import Dispatcher
from worker.store.engines import EngineRegistry
from worker.store.housekeeping import Housekeeping
from worker.store.jobs import JobStore
from worker.store.learnt import Learnt
from worker.store.messages import DeadMessages
from worker.store.registration import Registrations
from worker.store.results import ResultFormat
from worker.store.scripts import Scripts
from worker.store.search import JobSearch
from worker.store.stats import Stats
from worker.store.webhooks import WebhookStore


class Runtime:
    def __init__(self, settings: Settings, astria_transport: BaseAdapter | None = None) -> None:
        """`astria_transport`: the Astria client's HTTP seam (tests answer in-process)."""
        self.settings = settings
        self._astria_transport = astria_transport
        self._stores: dict[str, Storage] = {}
        self.redis: redis.Redis = redis_client(settings)
        self.keys = Keys(settings.key_prefix)
        self.clock = RedisClock(self.redis)
        self.results = ResultFormat(settings.job_retention_seconds)
        self.jobs = JobStore(self.redis, settings, self.keys, self.results)
        self.channels = Channels(self.redis, self.keys)
        self.search = JobSearch(self.redis, self.keys)
        self.registrations = Registrations(self.jobs)
        self.learnt = Learnt(self.redis, self.keys)
        self.stats = Stats(self.redis, self.keys)
        self.dispatcher = Dispatcher(self.jobs.scripts, settings, self.keys)
        self.webhooks = WebhookStore(self.redis, self.keys, self.jobs.scripts,
                                     settings.job_retention_seconds)
        self.engines = EngineRegistry(self.redis, self.keys)
        self.copies = CopyStore(self.redis, self.keys, self.jobs.scripts,
                                settings.job_retention_seconds)
        self.batches = Batches(self.redis, self.keys, self.jobs.scripts,
                               settings.job_retention_seconds)
        self.dead_messages = DeadMessages(self.redis, self.keys, self.results)
        self.housekeeping = Housekeeping(self.redis, self.keys, settings.job_retention_seconds,
                                         self.dead_messages, self.engines)

    @cached_property
    def astria(self) -> AstriaClient:
        """The Astria client (needs ASTRIA_API_KEY; producers and the CLI mostly do not)."""
        return AstriaClient(self.settings, self.stats, self.dispatcher.reports,
                            self._astria_transport)

    @cached_property
    def tracing(self) -> Tracing:
        """Traces of jobs (OTEL_*), set up on first use: a producer never needs them."""
        return Tracing(self.settings.tracing_on)

    @cached_property
    def egress(self) -> Egress:
        """HTTP to producers' webhook endpoints: its own connections (never the Astria key),
        checked addresses, a total deadline per attempt."""
        s = self.settings
        return Egress(per_destination=s.webhook_max_in_flight_per_destination,
                      allow_private=s.webhook_allow_private_addresses)

    def storage(self, tenant: str) -> Storage:
        """Where a tenant's durable copies go (its storage_url, else STORAGE_URL; ConfigError
        with neither), opened once per store."""
        url = self.settings.storage_url_for(tenant)
        if not url:
            raise ConfigError(f"no STORAGE_URL, nor a storage_url of tenant {tenant!r}")
        if url not in self._stores:
            s = self.settings
            self._stores[url] = open_storage(url, s.storage_endpoint_url,
                                             s.storage_url_ttl_seconds)
        return self._stores[url]

    @property
    def scripts(self) -> Scripts:
        return self.jobs.scripts


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    return Runtime(get_settings())
