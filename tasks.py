"""Invoke entry point: assembles one namespace per module of the authops package."""

from invoke import Collection

from authops import (
    certs,
    db,
    doctor,
    env,
    haproxy,
    hosts,
    lab,
    nfs,
    nodes,
    rotation,
    smtp,
    stack,
)

ns = Collection()
ns.add_collection(env.ns)
ns.add_collection(hosts.ns)
ns.add_collection(nfs.ns)
ns.add_collection(haproxy.ns)
ns.add_collection(certs.ns)
ns.add_collection(db.ns)
ns.add_collection(stack.ns)
ns.add_collection(smtp.ns)
ns.add_collection(rotation.ns)
ns.add_collection(nodes.ns)
ns.add_collection(lab.ns)
ns.add_task(doctor.doctor)
