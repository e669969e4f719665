"""Writes preferences.jsonl: the bundled preference pairs, written for this project.

Each fact gives one prompt with a short correct answer (chosen) and three kinds of rejected answer that small
instruct models produce: a confident wrong fact, a looping repetitive answer, and an evasive non-answer. Each
question appears as exactly one prompt, so tuner's split by prompt holds out whole questions.

    python tuner/data/make_preferences.py   # rewrites tuner/data/preferences.jsonl deterministically
"""

import json
import random
from pathlib import Path

# (question, correct answer, plausible wrong answer)
FACTS = [
    ("What is the first planet in the solar system?", "Mercury is the first planet from the Sun.", "Neptune is the first planet in the solar system."),
    ("Which planet is the largest in the solar system?", "Jupiter is the largest planet in the solar system.", "Earth is the largest planet in the solar system."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet because of the iron oxide on its surface.", "Venus is known as the Red Planet."),
    ("Which planet has the most famous rings?", "Saturn has the most famous rings, made mostly of ice and rock.", "Mercury has the most famous rings."),
    ("How many planets are in the solar system?", "There are eight planets in the solar system.", "There are twelve planets in the solar system."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth.", "Sirius is the closest star to Earth."),
    ("What are the colours of the rainbow?", "Red, orange, yellow, green, blue, indigo and violet.", "Black, white, grey, brown and pink."),
    ("What is the visible spectrum?", "The visible spectrum is the range of light wavelengths the human eye can see, roughly 380 to 750 nanometres, from violet to red.", "The visible spectrum is the part of sound that humans can hear."),
    ("What gas do plants absorb for photosynthesis?", "Plants absorb carbon dioxide and use light to turn it into sugar, releasing oxygen.", "Plants absorb helium for photosynthesis."),
    ("Explain photosynthesis in one sentence.", "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make glucose and release oxygen.", "Photosynthesis is how animals digest food in their stomachs."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level.", "Water boils at 50 degrees Celsius at sea level."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius.", "Water freezes at 32 degrees Celsius."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au.", "The chemical symbol for gold is Gd."),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O.", "The chemical formula of water is CO2."),
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Osaka."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra.", "The capital of Australia is Sydney."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa.", "The capital of Canada is Toronto."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth.", "The Atlantic Ocean is the largest ocean on Earth."),
    ("What is the longest river in the world?", "The Nile is usually named the longest river, at about 6,650 kilometres, with the Amazon a close rival.", "The Thames is the longest river in the world."),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest mountain above sea level, at 8,849 metres.", "Mont Blanc is the tallest mountain on Earth."),
    ("How many continents are there?", "There are seven continents.", "There are three continents."),
    ("How many days are in a leap year?", "A leap year has 366 days.", "A leap year has 360 days."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour.", "There are 100 minutes in an hour."),
    ("What is 12 times 12?", "12 times 12 is 144.", "12 times 12 is 124."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.", "Charles Dickens wrote Romeo and Juliet."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.", "Vincent van Gogh painted the Mona Lisa."),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity.", "Isaac Newton developed the theory of relativity."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance.", "Gold is the hardest natural substance."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body.", "The liver pumps blood through the body."),
    ("How many bones are in the adult human body?", "An adult human body has 206 bones.", "An adult human body has 412 bones."),
    ("What is the largest mammal?", "The blue whale is the largest mammal.", "The African elephant is the largest mammal."),
    ("What do bees make?", "Bees make honey and beeswax.", "Bees make milk."),
    ("What is the speed of light?", "Light travels at about 300,000 kilometres per second in a vacuum.", "Light travels at about 300 kilometres per hour."),
    ("What force keeps us on the ground?", "Gravity keeps us on the ground.", "Magnetism keeps us on the ground."),
    ("What are the three states of matter?", "The three common states of matter are solid, liquid and gas.", "The three states of matter are hot, cold and warm."),
    ("Why is the sky blue?", "The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones.", "The sky is blue because it reflects the colour of the ocean."),
    ("What causes the seasons on Earth?", "The seasons come from the tilt of Earth's axis, which changes how directly sunlight hits each hemisphere.", "The seasons happen because Earth gets much closer to the Sun in summer."),
    ("What is the main gas in Earth's atmosphere?", "Nitrogen makes up about 78 percent of Earth's atmosphere.", "Oxygen makes up about 90 percent of Earth's atmosphere."),
    ("Why should college students get a library card?", "A library card gives students free access to books, journals, databases, quiet study space and help from librarians.", "College students should not get a library card because libraries have nothing useful."),
    ("What are the benefits of electric vehicles?", "Electric vehicles have no tailpipe emissions, lower running costs and need less maintenance than petrol cars.", "Electric vehicles have no benefits at all."),
    ("Why is exercise good for you?", "Regular exercise strengthens the heart and muscles, improves mood and sleep, and lowers the risk of many diseases.", "Exercise is bad for you because it makes you tired."),
    ("Why should you wash your hands?", "Washing hands with soap removes germs and helps stop the spread of illness.", "You should wash your hands to make them grow faster."),
    ("What is the purpose of a seatbelt?", "A seatbelt holds you in place during a sudden stop or crash and greatly lowers the risk of serious injury.", "A seatbelt is only there to decorate the car."),
    ("Why do we need sleep?", "Sleep lets the body repair itself and the brain store memories; adults need about seven to nine hours.", "We do not need sleep; it is a waste of time."),
    ("What is recycling?", "Recycling turns used materials such as paper, glass and plastic into new products, saving resources and energy.", "Recycling means throwing everything into the same bin as rubbish."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea, such as teacher, city or happiness.", "A noun is a word that describes an action, like run."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "The opposite of hot is warm."),
    ("What is the plural of mouse?", "The plural of mouse is mice.", "The plural of mouse is mouses."),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "A hexagon has eight sides."),
    ("What is the largest desert in the world?", "Antarctica is the largest desert; the Sahara is the largest hot desert.", "The Amazon is the largest desert in the world."),
    ("What language is spoken in Brazil?", "Portuguese is the main language spoken in Brazil.", "Spanish is the main language spoken in Brazil."),
    ("What is the currency of the United Kingdom?", "The currency of the United Kingdom is the pound sterling.", "The currency of the United Kingdom is the euro."),
    ("What is the smallest prime number?", "The smallest prime number is 2.", "The smallest prime number is 1."),
    ("What is DNA?", "DNA is the molecule that carries the genetic instructions of living things.", "DNA is a type of vitamin found in oranges."),
    ("What does a thermometer measure?", "A thermometer measures temperature.", "A thermometer measures weight."),
    ("What is the Moon?", "The Moon is Earth's only natural satellite, orbiting the planet about every 27 days.", "The Moon is a small star that shines by its own light."),
    ("What is the largest country by area?", "Russia is the largest country by area.", "Brazil is the largest country by area."),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong was the first person to walk on the Moon, in 1969.", "Yuri Gagarin was the first person to walk on the Moon."),
]

EVASIVE = [
    "That is a very interesting question and there are many ways to think about it.",
    "I am not sure, it depends on many factors.",
    "Many people have asked this question over the years.",
]


def looping(answer: str) -> str:
    first = answer.split(",")[0].rstrip(".")
    return " ".join([first + "."] * 4)


def pairs() -> list[dict[str, str]]:
    rng = random.Random(0)
    rows = []
    for question, correct, wrong in FACTS:
        for rejected in (wrong, looping(correct), rng.choice(EVASIVE)):
            rows.append({"prompt": question, "chosen": correct, "rejected": rejected})
    rng.shuffle(rows)
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("preferences.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in pairs()))
    print(f"wrote {out}")
