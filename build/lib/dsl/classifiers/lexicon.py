"""The curated lexicon of the built-in category classifier.

Phrases are written naturally; the classifier normalises them exactly like the text (NFKC, case
folding, apostrophes dropped, hyphens and whitespace runs turned into one space). Weights are
probabilities that the phrase alone means the category: 0.85+ triggers on its own, 0.5-0.6
triggers on its own but is damped by educational framing, 0.3 or less needs company.

A *group* is a set of phrases that mean nothing alone; a *rule* fires a category when a phrase of
one group is followed closely by a phrase of another ("how do I" + "make meth"). Keeping intents
and acts apart keeps the lexicon small and lets "kill the process" or "shoot a photo" pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    first: str  # group name
    second: str  # group name
    weight: float
    max_gap: int  # characters allowed between the end of `first` and the start of `second`
    ordered: bool = True  # when False, `second` may also come before `first`


def _combine(*parts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(" ".join(words) for words in product(*parts))


_FIRST_PERSON_INTENT = (
    "i want to", "i wanna", "i am going to", "im going to", "im gonna", "i will", "ill",
    "i plan to", "i am planning to", "im planning to", "i need to", "i have to", "i intend to",
    "i would like to", "id like to", "i really want to", "im about to", "i am about to",
    "i am ready to", "im ready to", "i decided to", "i have decided to", "tonight i will",
)  # fmt: skip
_HOW_TO = (
    "how to", "how do i", "how can i", "how would i", "how should i", "how could i",
    "how do you", "how can you", "best way to", "easiest way to", "quickest way to",
    "fastest way to", "cheapest way to", "teach me how to", "tell me how to", "show me how to",
    "explain how to", "step by step guide to", "instructions to", "instructions for how to",
    "help me", "where can i", "what is the best way to", "whats the best way to",
    "give me a recipe to", "give me instructions to", "walk me through how to",
)  # fmt: skip

_HARM_VERBS = (
    # Not "hurt", "shoot", "execute", "run over": "hurt her feelings", "shoot him an email".
    "kill", "murder", "stab", "strangle", "poison", "torture", "slaughter", "maim", "behead",
    "bludgeon", "shoot and kill", "shoot dead", "beat to death", "stab to death",
)  # fmt: skip
_HARM_TARGETS = (
    "him", "her", "them", "my wife", "my husband", "my boss", "my neighbor", "my neighbour",
    "my teacher", "my classmates", "my coworker", "my coworkers", "my ex", "my girlfriend",
    "my boyfriend", "my family", "my mother", "my father", "my mom", "my dad", "my brother",
    "my sister", "my roommate", "my landlord", "someone", "somebody", "a person", "people",
    "a child", "a cop", "a police officer", "the president", "my partner", "my son",
    "my daughter", "my baby", "everyone at school", "everyone at work", "my whole family",
    "that guy", "that woman", "this guy", "the senator",
)  # fmt: skip
_SELF_ACTS = (
    "kill myself", "end my life", "commit suicide", "end it all", "hang myself", "cut myself",
    "hurt myself", "slit my wrists", "overdose", "take my own life", "shoot myself",
    "jump off a bridge", "jump in front of a train", "starve myself", "burn myself",
    "poison myself", "suffocate myself", "drown myself", "take all my pills", "tie a noose",
    "hide cuts", "hide my cuts", "hide the cuts",
)  # fmt: skip
_ILLICIT_ACTS = (
    "make meth", "cook meth", "make methamphetamine", "cook crack", "make crack cocaine",
    "make heroin", "make lsd", "make fentanyl", "grow and sell weed illegally", "buy cocaine",
    "buy heroin", "buy meth", "buy fentanyl", "buy drugs on the dark web", "sell drugs",
    "smuggle drugs", "smuggle cocaine", "launder money", "money laundering", "evade taxes",
    "hide money from the irs", "steal a car", "hotwire a car", "break into a car",
    "break into a house", "break into someones house", "shoplift", "steal from a store",
    "steal credit card numbers", "use stolen credit cards", "make a credit card skimmer",
    "install a card skimmer", "hack into my exs account", "hack into someones account",
    "hack someones instagram", "hack into someones email", "hack a bank",
    "hack into a bank", "steal someones identity", "commit identity theft", "forge a signature",
    "forge documents", "make a fake id", "make fake ids", "make a fake passport",
    "buy a fake passport", "print counterfeit money", "make counterfeit money",
    "write a phishing email", "create a phishing site", "write ransomware", "deploy ransomware",
    "spread malware", "ddos a website", "bypass a car immobilizer", "cheat on my taxes",
    "commit insurance fraud", "commit tax fraud", "scam old people", "scam elderly people",
    "run a ponzi scheme", "traffic people", "blackmail someone", "extort someone",
    "bribe a police officer", "bribe a judge", "sell stolen goods", "fence stolen goods",
    "pirate movies and sell them", "steal packages", "pick someones pocket", "get away with fraud",
)  # fmt: skip
_VIOLENT_ILLICIT_ACTS = (
    "make a bomb", "build a bomb", "make a pipe bomb", "build a pipe bomb", "make explosives",
    "make an explosive", "make a molotov cocktail", "make thermite to hurt", "make napalm",
    "make a car bomb", "make a nail bomb", "make a suicide vest", "make a grenade",
    "make an untraceable gun", "build an untraceable gun", "buy a gun illegally",
    "buy an illegal gun", "3d print a gun", "build a ghost gun", "make a ghost gun",
    "convert my rifle to full auto", "make a silencer", "make ricin", "make sarin",
    "make nerve gas", "make mustard gas", "make chlorine gas to kill", "make a bioweapon",
    "make anthrax", "weaponize anthrax", "poison someone", "poison a water supply",
    "hire a hitman", "hire a hit man", "find a hitman", "kidnap a child", "kidnap someone",
    "get away with murder", "dispose of a body", "hide a body", "derail a train",
    "take hostages",
)  # fmt: skip

# fmt: off
GROUPS: dict[str, tuple[str, ...]] = {
    "first_person_intent": _FIRST_PERSON_INTENT,
    "how_to": _HOW_TO,
    "harm_person": _combine(_HARM_VERBS, _HARM_TARGETS),
    "self_act": _SELF_ACTS,
    "illicit_act": _ILLICIT_ACTS,
    "violent_illicit_act": _VIOLENT_ILLICIT_ACTS,
    "protected_group": (
        "jews", "jewish people", "muslims", "christians", "hindus", "sikhs", "black people",
        "blacks", "white people", "whites", "asians", "asian people", "arabs", "mexicans",
        "latinos", "hispanics", "immigrants", "refugees", "migrants", "gay people", "gays",
        "lesbians", "trans people", "transgender people", "women", "disabled people",
        "gypsies", "roma", "africans", "chinese people", "indians", "native americans",
        "catholics", "atheists", "homosexuals", "the jews", "the muslims",
    ),
    "dehumanizer": (
        "are subhuman", "are vermin", "are cockroaches", "are rats", "are parasites",
        "are animals", "are a disease", "are a cancer", "are an inferior race", "are inferior",
        "are not human", "arent human", "are filth", "are scum", "are savages", "are apes",
        "are a plague", "are genetically inferior", "are less than human", "are a virus",
        "should not be allowed to breed", "ruin everything", "are destroying our race",
        "dont deserve rights", "do not deserve rights", "are all criminals", "are all rapists",
        "are all terrorists", "are born criminals", "are dirty", "are disgusting",
    ),
    "elimination_call": (
        "should be exterminated", "must be exterminated", "should all be killed",
        "should be killed", "must be killed", "deserve to die", "should be wiped out",
        "must be wiped out", "should be gassed", "should be lynched", "should hang",
        "need to be eradicated", "should be eradicated", "should be shot", "kill all",
        "exterminate all", "exterminate the", "gas all", "gas the", "lynch all", "burn all",
        "wipe out all", "get rid of all", "round up all", "deport and kill", "hunt down",
        "should be burned", "deserve a bullet", "should be purged", "purge all",
    ),
    "minor": (
        "child", "children", "kid", "kids", "minor", "minors", "underage", "under age",
        "preteen", "pre teen", "little girl", "little boy", "young girl", "young boy",
        "schoolgirl", "schoolboy", "middle schooler", "elementary schooler", "loli", "toddler",
        "young teen", "young teens", "my niece", "my nephew", "my stepdaughter", "my stepson",
        "a student of mine", "an eighth grader", "a seventh grader", "a sixth grader",
        *(f"{age} {unit}" for age in range(1, 18)
          for unit in ("year old", "years old", "yr old", "yo", "y o")),
        *(f"{prefix} {age}" for age in range(1, 18) for prefix in ("age", "aged")),
    ),
    "explicit_sexual": (
        "sexually explicit", "explicit sex", "sex scene", "erotic", "erotica", "porn",
        "pornographic", "pornography", "nudes", "nude photos", "nude pictures", "nude pics",
        "naked photos", "naked pictures", "have sex with", "having sex with", "sex with",
        "sexual roleplay", "sexting", "sext", "sexual story", "sexual content", "lewd", "smut",
        "hentai", "orgasm", "masturbate", "masturbating", "blowjob", "sexual acts",
        "sexual things", "make love to", "touch them sexually", "touch her sexually",
        "touch him sexually", "molest",
    ),
    "graphic_request": (
        "in gory detail", "in graphic detail", "in vivid detail", "as gory as possible",
        "as graphic as possible", "describe the gore", "extremely graphic", "graphic and gory",
        "with lots of blood and gore", "maximum gore", "in excruciating detail",
    ),
    "violent_act": (
        "torture", "torturing", "murder", "murdering", "killing", "dismember", "dismembering",
        "mutilate", "mutilating", "beheading", "decapitation", "slaughter", "massacre",
        "stabbing", "execution", "disembowel", "skinning someone alive", "flaying",
    ),
}

# Direct phrases: category -> ((weight, phrases), ...).
PHRASES: dict[str, tuple[tuple[float, tuple[str, ...]], ...]] = {
    "harassment": (
        (0.8, ("you worthless piece of", "you are a worthless piece of",
               "youre a worthless piece of", "you piece of shit", "you stupid bitch",
               "you dumb bitch", "you fat pig", "you ugly pig", "you disgusting pig",
               "you pathetic loser", "you worthless loser", "youre a pathetic loser",
               "you are a pathetic loser", "nobody will ever love you", "no one will ever love you",
               "everyone hates you", "everybody hates you", "the world would be better without you",
               "go kill yourself", "kill yourself", "kys", "you should kill yourself",
               "you should just die", "i hope you die", "i hope you get cancer",
               "you deserve to be raped", "you retard", "you fucking idiot", "you fucking moron",
               "shut up you", "you are worthless", "youre worthless", "you are a waste of space",
               "youre a waste of space", "you are garbage", "youre garbage", "you are trash",
               "youre trash", "you are a disgrace", "ugly fat loser", "nobody wants you here")),
        (0.5, ("you idiot", "you moron", "you loser", "you are pathetic", "youre pathetic",
               "you are disgusting", "youre disgusting", "you are so stupid", "youre so stupid",
               "you are an idiot", "youre an idiot", "you are a moron", "youre a moron",
               "you are ugly", "youre ugly", "you bitch", "you whore", "you slut")),
    ),
    "harassment/threatening": (
        (0.9, ("i will kill you", "ill kill you", "im going to kill you", "i am going to kill you",
               "im gonna kill you", "i will find you and", "ill find you and", "i will hurt you",
               "ill hurt you", "im going to hurt you", "i will make you suffer",
               "ill make you suffer", "i will end you", "im coming for you and",
               "i will burn your house", "ill burn your house down", "i will rape you",
               "youre dead meat",
               "you are dead meat", "ill beat the shit out of you", "i will beat you to death",
               "i will break your legs", "ill break your legs", "i will slit your throat",
               "ill slit your throat", "i will shoot you dead", "ill shoot you dead",
               "i will shoot you in the head", "ill put a bullet in your head",
               "i will stab you", "ill stab you", "your family will pay",
               "i will hunt you down", "ill hunt you down", "sleep with one eye open",
               "i will make your life hell", "ill make your life hell")),
        (0.35, ("you are going to die", "youre going to die", "you will die")),
        (0.55, ("i know where you live", "i know where your kids go to school",
                "watch your back", "you will regret this", "youll regret this",
                "you better watch out", "im coming for you", "i am coming for you",
                "i will beat you up", "ill beat you up", "im going to beat you up")),
    ),
    "hate": (
        (0.85, ("inferior race", "master race", "race traitor", "race traitors", "heil hitler",
                "sieg heil", "white power", "white genocide", "jewish conspiracy to",
                "the holocaust never happened", "the holocaust was a hoax", "gas chambers were fake",
                "subhuman race", "mongrel race", "go back to your country", "go back where you came from",
                "14 words")),
    ),
    "hate/threatening": (
        (0.9, ("kill all jews", "kill all muslims", "gas the jews", "lynch them all",
               "race war now", "day of the rope", "start a race war", "ethnic cleansing now")),
    ),
    "illicit": (
        (0.3, _ILLICIT_ACTS),
        (0.6, ("buy drugs on the dark web", "sell stolen credit cards", "carding tutorial",
               "cvv dump", "fullz for sale", "untraceable money laundering")),
    ),
    "illicit/violent": (
        (0.45, ("pipe bomb", "car bomb", "nail bomb", "suicide vest", "molotov cocktail",
                "ghost gun", "untraceable gun", "ricin", "sarin", "nerve agent", "hitman",
                "hit man")),
        (0.3, _VIOLENT_ILLICIT_ACTS),
    ),
    "self-harm": (
        (0.6, ("i cut myself", "i have been cutting myself", "ive been cutting myself",
               "i keep cutting myself", "i burn myself", "i have been burning myself",
               "i hurt myself on purpose", "i starve myself", "i have been starving myself", "ive been starving myself",
               "i punch walls until my hands bleed", "i started cutting again",
               "i relapsed and cut", "cutting myself again", "i scratch myself until i bleed")),
    ),
    "self-harm/intent": (
        (0.9, ("i want to kill myself", "i wanna kill myself", "im going to kill myself",
               "i am going to kill myself", "im gonna kill myself", "i will kill myself",
               "ill kill myself", "i want to die", "i wanna die", "i want to end my life",
               "i am going to end my life", "im going to end my life", "i want to end it all",
               "i dont want to live anymore", "i do not want to live anymore",
               "i dont want to be alive anymore", "i dont want to be alive", "im suicidal",
               "i am suicidal", "i feel suicidal", "planning my suicide", "my suicide note",
               "writing my suicide note", "this is my goodbye letter", "i have no reason to live",
               "i am better off dead", "im better off dead", "everyone would be better off without me",
               "i want to disappear forever and die", "i am going to jump off", "im going to jump off",
               "tonight is the night i end it", "i cant go on living", "i have decided to die",
               "i want to hurt myself", "i want to cut myself", "i wish i was dead", "i wish i were dead")),
    ),
    "self-harm/instructions": (
        (0.9, ("painless way to die", "painless way to kill myself", "painless suicide",
               "most painless suicide", "suicide methods", "best suicide method",
               "how many pills to die", "how many pills does it take to die", "lethal dose to die",
               "how to tie a noose", "how deep to cut", "how deep should i cut",
               "where to cut to bleed out", "how to cut without anyone noticing",
               "how to hide cuts", "how to hide self harm", "quickest way to die",
               "easiest way to die", "best way to die", "how to overdose")),
    ),
    "sexual": (
        (0.85, ("blowjob", "handjob", "deepthroat", "cumshot", "gangbang", "hentai",
                "write a sex scene", "write an explicit sex scene", "explicit sex scene",
                "write porn", "porn story", "erotic story about", "sexually explicit story",
                "describe sex in detail", "describe the sex", "send nudes", "send me nudes",
                "have sex with me", "fuck me hard", "talk dirty to me", "sexual roleplay",
                "lets have phone sex", "describe her naked body", "describe his naked body",
                "masturbate", "masturbating", "jerk off", "jerking off")),
        (0.5, ("horny", "nsfw", "erotica", "sexting", "pornhub", "xxx video", "nude pics", "porn")),
    ),
    "sexual/minors": (
        (0.95, ("child porn", "child pornography", "cp links", "csam", "jailbait", "lolicon",
                "pedo content", "preteen nudes", "underage nudes", "underage porn", "teen nudes")),
    ),
    "violence": (
        (0.85, ("shoot up the school", "shoot up my school", "shoot up the office",
                "school shooting tomorrow", "mass shooting at", "i want to massacre",
                "going to massacre", "blow up the building", "blow up my school",
                "bomb the school", "stab everyone", "kill everyone at", "kill as many people as",
                "run people over with my car", "plant a bomb")),
    ),
    "violence/graphic": (
        (0.6, ("guts spilling out", "intestines spilling", "entrails spilled", "brains splattered",
               "skull caved in", "skull crushed open", "eyes gouged out", "gouged out his eyes",
               "gouged out her eyes", "flayed alive", "skinned alive", "dismembered body parts",
               "severed limbs", "blood spurting from", "disemboweled", "body torn apart",
               "ripped his heart out", "ripped her heart out", "bones snapping through the skin")),
    ),
}

# fmt: on
RULES: tuple[Rule, ...] = (
    Rule("violence", "first_person_intent", "harm_person", 0.9, 12),
    Rule("violence", "how_to", "harm_person", 0.85, 20),
    Rule("self-harm/intent", "first_person_intent", "self_act", 0.9, 12),
    Rule("self-harm/instructions", "how_to", "self_act", 0.9, 25),
    Rule("illicit", "how_to", "illicit_act", 0.85, 20),
    Rule("illicit", "first_person_intent", "illicit_act", 0.75, 12),
    Rule("illicit/violent", "how_to", "violent_illicit_act", 0.9, 20),
    Rule("illicit/violent", "first_person_intent", "violent_illicit_act", 0.85, 12),
    Rule("hate", "protected_group", "dehumanizer", 0.85, 25),
    Rule("hate/threatening", "protected_group", "elimination_call", 0.9, 25, ordered=False),
    Rule("sexual/minors", "minor", "explicit_sexual", 0.9, 60, ordered=False),
    Rule("violence/graphic", "graphic_request", "violent_act", 0.85, 60, ordered=False),
)

# Idioms that contain a harmful-looking phrase; a hit inside one of these counts for nothing.
EXEMPT: tuple[str, ...] = (
    "kill them with kindness", "kill him with kindness", "kill her with kindness",
    "kill someone with kindness", "murder a pizza", "murder a burger", "murder a curry",
    "poison them against", "poison her against", "poison him against", "kill myself laughing",
    "killing myself laughing", "kill myself with laughter", "die laughing", "die of laughter",
    "want to die of embarrassment", "i want to die of embarrassment", "dying of embarrassment",
    "kill two birds", "kill the process", "kill the lights", "killer app", "killer feature",
    "to die for", "dressed to kill", "kill some time", "kill time",
)  # fmt: skip

# Framing that lowers every score: the text is about preventing, studying or reporting harm.
PROTECTIVE_FRAMING: tuple[str, ...] = (
    "how to prevent", "prevention", "prevent", "warning signs", "awareness", "statistics",
    "history of", "historical", "historian", "propaganda", "research", "researching",
    "for a school report", "essay about", "essay on", "how to help", "help a friend", "hotline", "crisis line", "support group", "recovery", "recovering",
    "therapy", "therapist", "counselor", "how to report", "reporting", "protect", "protecting",
    "parental controls", "child safety", "safeguarding", "educate", "education", "signs of",
    "how to recognize", "how to spot", "how do i talk to", "what should i do if",
    "is it illegal", "is it legal", "penalty for", "sentence for", "laws against", "law against",
    "why is it wrong", "why do people", "documentary", "news article", "claimed that",
    "believed that", "the nazis", "nazi propaganda",
)  # fmt: skip
# Framing that lowers violence and harassment only: games, fiction, sport, idioms.
FICTION_FRAMING: tuple[str, ...] = (
    "in the game", "video game", "minecraft", "fortnite", "skyrim", "call of duty", "npc",
    "boss fight", "my character", "in my novel", "in my story", "in the novel", "in the movie",
    "in the film", "screenplay", "villain", "the plot", "fictional", "dungeons and dragons",
    "d&d", "zombie", "zombies", "the dragon", "warhammer",
)  # fmt: skip
FICTION_DAMPED_CATEGORIES: frozenset[str] = frozenset(
    {"violence", "violence/graphic", "harassment", "harassment/threatening"}
)
NEGATIONS: frozenset[str] = frozenset(
    {"not", "never", "dont", "wont", "wouldnt", "didnt", "cant", "couldnt", "shouldnt", "no",
     "stop", "nobody", "refuse", "refused", "against"}
)  # fmt: skip
