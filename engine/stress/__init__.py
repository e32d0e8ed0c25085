"""``multifd-engine stress``: many migrations, seeded variation, injected faults.

``settings`` is the ``[stress]`` config section; ``plan`` draws each
migration and round from the seed; ``runner`` runs them and checks every
round; ``summary`` is what a run reports.
"""
