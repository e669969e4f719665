"""Writes preferences.jsonl: the bundled preference pairs, written for this project.

Each fact gives one prompt with a short correct answer (chosen) and five kinds of rejected answer that small
instruct models produce: a confident wrong fact, a looping repetitive answer, an evasive non-answer, a rambling
answer that buries a wrong fact in filler, and a hedged wrong guess. A sixth pair is style-matched: chosen and
rejected fill one template with the right and a wrong fact of the same number of words, so only knowing the fact
tells them apart. Each question appears as exactly one prompt, so tuner's split by prompt holds out whole
questions. Every row names its `kind` (tuner's default `data.group_column` for this data) and a stable `pair_id`
(question number and kind).

    python tuner/data/bundled/make_preferences.py   # rewrites tuner/data/bundled/preferences.jsonl deterministically
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
    ("What is the smallest planet in the solar system?", "Mercury is the smallest planet in the solar system.", "Jupiter is the smallest planet in the solar system."),
    ("Which planet is closest in size to Earth?", "Venus is closest to Earth in size.", "Saturn is closest to Earth in size."),
    ("How long does Earth take to orbit the Sun?", "Earth takes about 365.25 days to orbit the Sun.", "Earth takes about 30 days to orbit the Sun."),
    ("How long does Earth take to spin once on its axis?", "Earth spins once on its axis about every 24 hours.", "Earth spins once on its axis every week."),
    ("What is a light year?", "A light year is the distance light travels in one year, about 9.46 trillion kilometres.", "A light year is the time it takes the Moon to orbit Earth."),
    ("What causes ocean tides?", "Tides are caused mainly by the Moon's gravity pulling on Earth's oceans, with help from the Sun.", "Tides are caused by wind blowing across the ocean."),
    ("What is the centre of an atom called?", "The centre of an atom is the nucleus, made of protons and neutrons.", "The centre of an atom is called the electron."),
    ("What charge does an electron have?", "An electron has a negative charge.", "An electron has a positive charge."),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is Na.", "The chemical symbol for sodium is So."),
    ("What is the most abundant gas in the air we breathe?", "Nitrogen is the most abundant gas in air, about 78 percent.", "Carbon dioxide is the most abundant gas in air."),
    ("What is the pH of pure water?", "Pure water has a pH of 7, which is neutral.", "Pure water has a pH of 1, which is very acidic."),
    ("What is the unit of electrical resistance?", "Electrical resistance is measured in ohms.", "Electrical resistance is measured in litres."),
    ("What is the powerhouse of the cell?", "The mitochondrion is called the powerhouse of the cell because it makes most of its energy.", "The nucleus is called the powerhouse of the cell."),
    ("What do red blood cells carry?", "Red blood cells carry oxygen from the lungs to the rest of the body.", "Red blood cells carry sound signals to the brain."),
    ("Which organ do humans use to breathe?", "Humans breathe with their lungs.", "Humans breathe with their kidneys."),
    ("How many chambers does the human heart have?", "The human heart has four chambers.", "The human heart has two chambers."),
    ("What vitamin does sunlight help the body make?", "Sunlight helps the skin make vitamin D.", "Sunlight helps the skin make vitamin C."),
    ("What is the largest organ of the human body?", "The skin is the largest organ of the human body.", "The heart is the largest organ of the human body."),
    ("What do herbivores eat?", "Herbivores eat plants.", "Herbivores eat only meat."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal, reaching about 110 kilometres per hour.", "The tortoise is the fastest land animal."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("Are whales fish or mammals?", "Whales are mammals: they breathe air and feed their young milk.", "Whales are fish because they live in water."),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "The capital of Italy is Milan."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "The capital of Germany is Munich."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid.", "The capital of Spain is Barcelona."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo.", "The capital of Egypt is Alexandria."),
    ("What is the capital of India?", "The capital of India is New Delhi.", "The capital of India is Mumbai."),
    ("What is the capital of Brazil?", "The capital of Brazil is Brasilia.", "The capital of Brazil is Rio de Janeiro."),
    ("What is the capital of Turkey?", "The capital of Turkey is Ankara.", "The capital of Turkey is Istanbul."),
    ("On which continent is Kenya?", "Kenya is in Africa.", "Kenya is in South America."),
    ("Which ocean lies between Europe and North America?", "The Atlantic Ocean lies between Europe and North America.", "The Indian Ocean lies between Europe and North America."),
    ("What is the highest waterfall in the world?", "Angel Falls in Venezuela is the highest waterfall, at about 979 metres.", "Niagara Falls is the highest waterfall in the world."),
    ("In which country are the pyramids of Giza?", "The pyramids of Giza are in Egypt.", "The pyramids of Giza are in Mexico."),
    ("In what year did World War II end?", "World War II ended in 1945.", "World War II ended in 1965."),
    ("Who was the first president of the United States?", "George Washington was the first president of the United States.", "Abraham Lincoln was the first president of the United States."),
    ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone in 1876.", "Thomas Edison invented the telephone in 1950."),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928.", "Marie Curie discovered penicillin."),
    ("Who proposed the theory of evolution by natural selection?", "Charles Darwin proposed evolution by natural selection.", "Galileo proposed evolution by natural selection."),
    ("What is 15 plus 27?", "15 plus 27 is 42.", "15 plus 27 is 32."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25.", "100 divided by 4 is 40."),
    ("What is 9 times 7?", "9 times 7 is 63.", "9 times 7 is 56."),
    ("What is half of 50?", "Half of 50 is 25.", "Half of 50 is 20."),
    ("How many degrees are in a right angle?", "A right angle has 90 degrees.", "A right angle has 180 degrees."),
    ("How many sides does a triangle have?", "A triangle has three sides.", "A triangle has four sides."),
    ("What is the value of pi to two decimal places?", "Pi is about 3.14.", "Pi is about 2.71."),
    ("How many centimetres are in a metre?", "There are 100 centimetres in a metre.", "There are 10 centimetres in a metre."),
    ("How many grams are in a kilogram?", "There are 1,000 grams in a kilogram.", "There are 100 grams in a kilogram."),
    ("How many hours are in a day?", "There are 24 hours in a day.", "There are 12 hours in a day."),
    ("How many weeks are in a year?", "A year has 52 weeks.", "A year has 40 weeks."),
    ("Why do we brush our teeth?", "Brushing removes plaque and food, which prevents tooth decay and gum disease.", "We brush our teeth to make them grow longer."),
    ("Why is drinking water important?", "Water keeps the body hydrated, helps control temperature and carries nutrients to cells.", "Drinking water is not important because food has enough."),
    ("Why should you wear sunscreen?", "Sunscreen protects skin from ultraviolet rays that cause sunburn and skin cancer.", "Sunscreen makes your skin absorb more sunlight."),
    ("What are the benefits of reading books?", "Reading builds vocabulary, knowledge and concentration, and can reduce stress.", "Reading books has no benefits."),
    ("Why do leaves change colour in autumn?", "In autumn trees stop making green chlorophyll, revealing yellow and orange pigments.", "Leaves change colour in autumn because they are painted by birds."),
    ("Why do we have leap years?", "Leap years keep the calendar in step with Earth's orbit, which takes about 365.25 days.", "Leap years exist to give people an extra holiday."),
    ("What is the past tense of go?", "The past tense of go is went.", "The past tense of go is goed."),
    ("What is a synonym for happy?", "A synonym for happy is joyful.", "A synonym for happy is sad."),
    ("What is the plural of child?", "The plural of child is children.", "The plural of child is childs."),
    ("What is an adjective?", "An adjective is a word that describes a noun, such as tall, red or happy.", "An adjective is a word that joins two sentences."),
    ("What does a compass show?", "A compass shows direction, its needle pointing to magnetic north.", "A compass shows the time."),
]

# Style-matched pairs: one template per question, filled with the right fact (chosen) or a plausible wrong one
# (rejected) of the same number of words. Chosen and rejected share every word but the fact, so a model can only
# prefer the chosen answer by knowing the fact, not by its style or length.
MATCHED = {
    "What is the first planet in the solar system?": ("The first planet from the Sun is {}.", "Mercury", "Neptune"),
    "Which planet is the largest in the solar system?": ("The largest planet in the solar system is {}.", "Jupiter", "Earth"),
    "Which planet is known as the Red Planet?": ("The planet known as the Red Planet is {}.", "Mars", "Venus"),
    "Which planet has the most famous rings?": ("The planet with the most famous rings is {}.", "Saturn", "Mercury"),
    "How many planets are in the solar system?": ("There are {} planets in the solar system.", "eight", "nine"),
    "What is the closest star to Earth?": ("The closest star to Earth is {}.", "the Sun", "Alpha Centauri"),
    "What are the colours of the rainbow?": ("The colours of the rainbow are red, orange, yellow, green, blue, indigo and {}.", "violet", "brown"),
    "What is the visible spectrum?": ("The visible spectrum is the range of {} that the human eye can detect.", "light wavelengths", "sound frequencies"),
    "What gas do plants absorb for photosynthesis?": ("Plants absorb {} for photosynthesis.", "carbon dioxide", "carbon monoxide"),
    "Explain photosynthesis in one sentence.": ("Photosynthesis is how plants use sunlight to make {} from water and carbon dioxide.", "sugar", "salt"),
    "What is the boiling point of water at sea level?": ("Water boils at {} degrees Celsius at sea level.", "100", "90"),
    "What is the freezing point of water in Celsius?": ("Water freezes at {} degrees Celsius.", "0", "10"),
    "What is the chemical symbol for gold?": ("The chemical symbol for gold is {}.", "Au", "Ag"),
    "What is the chemical formula of water?": ("The chemical formula of water is {}.", "H2O", "H2O2"),
    "What is the capital of France?": ("The capital of France is {}.", "Paris", "Marseille"),
    "What is the capital of Japan?": ("The capital of Japan is {}.", "Tokyo", "Kyoto"),
    "What is the capital of Australia?": ("The capital of Australia is {}.", "Canberra", "Melbourne"),
    "What is the capital of Canada?": ("The capital of Canada is {}.", "Ottawa", "Montreal"),
    "What is the largest ocean on Earth?": ("The largest ocean on Earth is the {} Ocean.", "Pacific", "Atlantic"),
    "What is the longest river in the world?": ("The longest river in the world is usually said to be the {}.", "Nile", "Thames"),
    "What is the tallest mountain on Earth?": ("The tallest mountain on Earth is Mount {}.", "Everest", "Kilimanjaro"),
    "How many continents are there?": ("There are {} continents.", "seven", "five"),
    "How many days are in a leap year?": ("A leap year has {} days.", "366", "365"),
    "How many minutes are in an hour?": ("There are {} minutes in an hour.", "60", "30"),
    "What is 12 times 12?": ("12 times 12 is {}.", "144", "132"),
    "What is the square root of 81?": ("The square root of 81 is {}.", "9", "7"),
    "Who wrote Romeo and Juliet?": ("Romeo and Juliet was written by {}.", "William Shakespeare", "Charles Dickens"),
    "Who painted the Mona Lisa?": ("The Mona Lisa was painted by {}.", "Leonardo da Vinci", "Vincent van Gogh"),
    "Who developed the theory of relativity?": ("The theory of relativity was developed by {}.", "Albert Einstein", "Isaac Newton"),
    "What is the hardest natural substance?": ("The hardest natural substance is {}.", "diamond", "granite"),
    "What organ pumps blood through the body?": ("The organ that pumps blood through the body is the {}.", "heart", "liver"),
    "How many bones are in the adult human body?": ("An adult human body has {} bones.", "206", "312"),
    "What is the largest mammal?": ("The largest mammal is the {}.", "blue whale", "African elephant"),
    "What do bees make?": ("Bees make {} from the nectar of flowers.", "honey", "silk"),
    "What is the speed of light?": ("Light travels at about 300,000 kilometres per {} in a vacuum.", "second", "hour"),
    "What force keeps us on the ground?": ("The force that keeps us on the ground is {}.", "gravity", "magnetism"),
    "What are the three states of matter?": ("The three common states of matter are solid, liquid and {}.", "gas", "heat"),
    "Why is the sky blue?": ("The sky looks blue because air scatters short {} wavelengths of sunlight the most.", "blue", "red"),
    "What causes the seasons on Earth?": ("The seasons on Earth are caused by {}.", "the tilt of its axis", "its distance from the Sun"),
    "What is the main gas in Earth's atmosphere?": ("The main gas in Earth's atmosphere is {}.", "nitrogen", "oxygen"),
    "Why should college students get a library card?": ("A library card gives college students {} access to books, journals and databases.", "free", "no"),
    "What are the benefits of electric vehicles?": ("Electric vehicles produce {} tailpipe emissions than petrol cars.", "fewer", "more"),
    "Why is exercise good for you?": ("Regular exercise {} the risk of heart disease.", "lowers", "raises"),
    "Why should you wash your hands?": ("Washing hands with soap {} the spread of illness.", "reduces", "increases"),
    "What is the purpose of a seatbelt?": ("A seatbelt {} the risk of serious injury in a crash.", "lowers", "raises"),
    "Why do we need sleep?": ("Adults need about {} hours of sleep a night.", "seven to nine", "two to three"),
    "What is recycling?": ("Recycling turns used materials into new products and {} resources.", "saves", "wastes"),
    "What is a noun?": ("A noun is a word that names a {}.", "person, place or thing", "action, state or event"),
    "What is the opposite of hot?": ("The opposite of hot is {}.", "cold", "cool"),
    "What is the plural of mouse?": ("The plural of mouse is {}.", "mice", "mices"),
    "How many sides does a hexagon have?": ("A hexagon has {} sides.", "six", "five"),
    "What is the largest desert in the world?": ("The largest desert in the world is {}.", "Antarctica", "Australia"),
    "What language is spoken in Brazil?": ("The main language spoken in Brazil is {}.", "Portuguese", "Spanish"),
    "What is the currency of the United Kingdom?": ("The currency of the United Kingdom is the {}.", "pound", "dollar"),
    "What is the smallest prime number?": ("The smallest prime number is {}.", "2", "3"),
    "What is DNA?": ("DNA is the molecule that carries the {} instructions of living things.", "genetic", "digestive"),
    "What does a thermometer measure?": ("A thermometer measures {}.", "temperature", "pressure"),
    "What is the Moon?": ("The Moon is Earth's only natural {}.", "satellite", "planet"),
    "What is the largest country by area?": ("The largest country by area is {}.", "Russia", "Canada"),
    "Who was the first person to walk on the Moon?": ("The first person to walk on the Moon was {}.", "Neil Armstrong", "Yuri Gagarin"),
    "What is the smallest planet in the solar system?": ("The smallest planet in the solar system is {}.", "Mercury", "Pluto"),
    "Which planet is closest in size to Earth?": ("The planet closest to Earth in size is {}.", "Venus", "Mars"),
    "How long does Earth take to orbit the Sun?": ("Earth takes about {} days to orbit the Sun.", "365", "28"),
    "How long does Earth take to spin once on its axis?": ("Earth spins once on its axis about every {} hours.", "24", "12"),
    "What is a light year?": ("A light year is a measure of {}.", "distance", "time"),
    "What causes ocean tides?": ("Ocean tides are caused mainly by the gravity of the {}.", "Moon", "Earth"),
    "What is the centre of an atom called?": ("The centre of an atom is called the {}.", "nucleus", "proton"),
    "What charge does an electron have?": ("An electron has a {} charge.", "negative", "neutral"),
    "What is the chemical symbol for sodium?": ("The chemical symbol for sodium is {}.", "Na", "S"),
    "What is the most abundant gas in the air we breathe?": ("The most abundant gas in the air we breathe is {}.", "nitrogen", "oxygen"),
    "What is the pH of pure water?": ("Pure water has a pH of {}.", "7", "5"),
    "What is the unit of electrical resistance?": ("Electrical resistance is measured in {}.", "ohms", "volts"),
    "What is the powerhouse of the cell?": ("The powerhouse of the cell is the {}.", "mitochondrion", "nucleus"),
    "What do red blood cells carry?": ("Red blood cells carry {} around the body.", "oxygen", "nitrogen"),
    "Which organ do humans use to breathe?": ("Humans breathe with their {}.", "lungs", "gills"),
    "How many chambers does the human heart have?": ("The human heart has {} chambers.", "four", "three"),
    "What vitamin does sunlight help the body make?": ("Sunlight helps the skin make vitamin {}.", "D", "A"),
    "What is the largest organ of the human body?": ("The largest organ of the human body is the {}.", "skin", "liver"),
    "What do herbivores eat?": ("Herbivores eat {}.", "plants", "meat"),
    "What is the fastest land animal?": ("The fastest land animal is the {}.", "cheetah", "lion"),
    "How many legs does a spider have?": ("A spider has {} legs.", "eight", "ten"),
    "Are whales fish or mammals?": ("Whales are {} that breathe air.", "mammals", "fish"),
    "What is the capital of Italy?": ("The capital of Italy is {}.", "Rome", "Florence"),
    "What is the capital of Germany?": ("The capital of Germany is {}.", "Berlin", "Bonn"),
    "What is the capital of Spain?": ("The capital of Spain is {}.", "Madrid", "Seville"),
    "What is the capital of Egypt?": ("The capital of Egypt is {}.", "Cairo", "Luxor"),
    "What is the capital of India?": ("The capital of India is {}.", "Delhi", "Kolkata"),
    "What is the capital of Brazil?": ("The capital of Brazil is {}.", "Brasilia", "Salvador"),
    "What is the capital of Turkey?": ("The capital of Turkey is {}.", "Ankara", "Izmir"),
    "On which continent is Kenya?": ("Kenya is in {}.", "Africa", "Asia"),
    "Which ocean lies between Europe and North America?": ("The {} Ocean lies between Europe and North America.", "Atlantic", "Pacific"),
    "What is the highest waterfall in the world?": ("The highest waterfall in the world is {} Falls.", "Angel", "Niagara"),
    "In which country are the pyramids of Giza?": ("The pyramids of Giza are in {}.", "Egypt", "Peru"),
    "In what year did World War II end?": ("World War II ended in {}.", "1945", "1918"),
    "Who was the first president of the United States?": ("The first president of the United States was {}.", "George Washington", "Abraham Lincoln"),
    "Who invented the telephone?": ("The telephone was invented by {}.", "Alexander Graham Bell", "Thomas Alva Edison"),
    "Who discovered penicillin?": ("Penicillin was discovered by {}.", "Alexander Fleming", "Louis Pasteur"),
    "Who proposed the theory of evolution by natural selection?": ("Evolution by natural selection was proposed by {}.", "Charles Darwin", "Gregor Mendel"),
    "What is 15 plus 27?": ("15 plus 27 is {}.", "42", "44"),
    "What is 100 divided by 4?": ("100 divided by 4 is {}.", "25", "20"),
    "What is 9 times 7?": ("9 times 7 is {}.", "63", "64"),
    "What is half of 50?": ("Half of 50 is {}.", "25", "30"),
    "How many degrees are in a right angle?": ("A right angle has {} degrees.", "90", "45"),
    "How many sides does a triangle have?": ("A triangle has {} sides.", "three", "five"),
    "What is the value of pi to two decimal places?": ("Pi to two decimal places is {}.", "3.14", "2.71"),
    "How many centimetres are in a metre?": ("There are {} centimetres in a metre.", "100", "1,000"),
    "How many grams are in a kilogram?": ("There are {} grams in a kilogram.", "1,000", "10,000"),
    "How many hours are in a day?": ("There are {} hours in a day.", "24", "20"),
    "How many weeks are in a year?": ("A year has {} weeks.", "52", "48"),
    "Why do we brush our teeth?": ("Brushing your teeth removes plaque and {} tooth decay.", "prevents", "causes"),
    "Why is drinking water important?": ("Drinking water keeps the body {}.", "hydrated", "dehydrated"),
    "Why should you wear sunscreen?": ("Sunscreen protects skin from {} rays that cause sunburn.", "ultraviolet", "infrared"),
    "What are the benefits of reading books?": ("Reading books {} vocabulary and knowledge.", "builds", "shrinks"),
    "Why do leaves change colour in autumn?": ("In autumn, leaves change colour because trees stop making green {}.", "chlorophyll", "nectar"),
    "Why do we have leap years?": ("Leap years keep the calendar in step with Earth's {}.", "orbit", "rotation"),
    "What is the past tense of go?": ("The past tense of go is {}.", "went", "gone"),
    "What is a synonym for happy?": ("A synonym for happy is {}.", "joyful", "angry"),
    "What is the plural of child?": ("The plural of child is {}.", "children", "childrens"),
    "What is an adjective?": ("An adjective is a word that describes a {}.", "noun", "verb"),
    "What does a compass show?": ("A compass needle points to magnetic {}.", "north", "south"),
}

EVASIVE = [
    "That is a very interesting question and there are many ways to think about it.",
    "I am not sure, it depends on many factors.",
    "Many people have asked this question over the years.",
]


FILLER = [
    "This is a question that many people find fascinating, and it has a long and interesting history.",
    "There are a lot of things to consider here, and experts have discussed it for many years.",
    "It is important to remember that knowledge changes over time and sources can differ.",
]
HEDGES = ["I think", "Probably", "If I remember correctly,"]


def rambling(wrong: str, rng: random.Random) -> str:
    return f"{rng.choice(FILLER)} {wrong} {rng.choice(FILLER)}"


def hedged(wrong: str, rng: random.Random) -> str:
    return f"{rng.choice(HEDGES)} {wrong[0].lower()}{wrong[1:]} But I am not sure."


def looping(answer: str) -> str:
    first = answer.split(",")[0].rstrip(".")
    return " ".join([first + "."] * 4)


KINDS = ("wrong_fact", "repetition", "evasive", "rambling", "hedged", "style_matched")


def style_matched(question: str) -> tuple[str, str]:
    template, right, wrong = MATCHED[question]
    if len(right.split()) != len(wrong.split()):
        raise ValueError(f"{question!r}: the style-matched facts differ in length: {right!r} vs {wrong!r}")
    return template.format(right), template.format(wrong)


def pairs() -> list[dict[str, str]]:
    rng = random.Random(0)
    rows = []
    for number, (question, correct, wrong) in enumerate(FACTS):
        matched_chosen, matched_rejected = style_matched(question)
        rejections = (wrong, looping(correct), rng.choice(EVASIVE), rambling(wrong, rng), hedged(wrong, rng))
        for kind, rejected in zip(KINDS, rejections):
            rows.append({"prompt": question, "chosen": correct, "rejected": rejected, "kind": kind,
                         "pair_id": f"q{number:03d}-{kind}"})
        rows.append({"prompt": question, "chosen": matched_chosen, "rejected": matched_rejected,
                     "kind": "style_matched", "pair_id": f"q{number:03d}-style_matched"})
    rng.shuffle(rows)
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("preferences.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in pairs()))
    print(f"wrote {out}")
