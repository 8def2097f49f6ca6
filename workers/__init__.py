"""Descent's Celery workers. They import ``service``; nothing imports them."""
