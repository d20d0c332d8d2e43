"""Integrations with web frameworks: :mod:`postroom.contrib.django`, :mod:`postroom.contrib.flask`.

Each imports its framework; postroom itself never imports them.
"""
