"""Test peers for the integration connectors: stateful fakes of HubSpot and Salesforce,
and localstripe (a fake Stripe others maintain) behind a Stripe-shaped auth gate.

Each fake is an ASGI app served on a real loopback socket; tests drive it over HTTP
and steer it through plain Python methods on the fake object (seed records, revoke a
token, delete a property, inject a 5xx, count calls). Import the context managers:

    from tests.fakes.hubspot import hubspot_fake
    from tests.fakes.salesforce import salesforce_fake
    from tests.fakes.stripe import localstripe, shared_localstripe, stripe_auth_gate
"""
