import gc
import os
from importlib import import_module

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# What is loaded by now (Django, the apps, the URLconf and its views) lives as long as the
# process, yet the cyclic garbage collector would walk all of it (~90,000 objects) in every
# full collection: ~25 ms in which no request of the process runs, ~25 µs per internal
# payment (bench/RESULTS.md). Frozen, the collector walks only what requests create.
import_module(settings.ROOT_URLCONF)  # otherwise imported by the first request
gc.collect()
gc.freeze()
