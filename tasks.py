"""Invoke entry point: assembles one namespace per module of the authops package."""

from invoke import Collection

from authops import env, hosts

ns = Collection()
ns.add_collection(env.ns)
ns.add_collection(hosts.ns)
