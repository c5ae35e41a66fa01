"""How the oracle's traces phrase a synthetic world's facts: the queries it searches with, the sentence
that restates a found fact, and what it says it is looking for. The step drills (core/worlds/drills.py)
restate facts the same way."""

# Query phrasings per relation: the first is tried first, the rest are reformulations.
QUERIES = {
    "born_in": ["{s} birthplace", "where was {s} born", "{s} native city"],
    "spouse": ["{s} spouse", "who is {s} married to", "{s} husband or wife"],
    "works_for": ["{s} employer", "where does {s} work", "{s} employed by"],
    "birth_year": ["{s} birth year", "year {s} was born", "{s} year of birth"],
    "country": ["{s} country", "which country is {s} in", "{s} located in country"],
    "population": ["{s} population", "how many people live in {s}", "{s} residents"],
    "headquarters": ["{s} headquarters", "where is {s} based", "{s} head office"],
    "founded": ["{s} founding year", "when was {s} established", "{s} founded in year"],
    "founder": ["{s} founder", "who founded {s}", "{s} started by"],
}

# How a found fact is stated in the reasoning.
FACT = {
    "born_in": "{s} was born in {o}",
    "spouse": "{s} is married to {o}",
    "works_for": "{s} works for {o}",
    "birth_year": "{s} was born in {o}",
    "country": "{s} is in {o}",
    "population": "{s} has a population of {o}",
    "headquarters": "{s} is headquartered in {o}",
    "founded": "{s} was founded in {o}",
    "founder": "{s} was founded by {o}",
}

# What the reasoning says it is looking for.
NEED = {
    "born_in": "the birthplace of {s}",
    "spouse": "the spouse of {s}",
    "works_for": "the employer of {s}",
    "birth_year": "the birth year of {s}",
    "country": "the country of {s}",
    "population": "the population of {s}",
    "headquarters": "the headquarters of {s}",
    "founded": "the founding year of {s}",
    "founder": "the founder of {s}",
}
