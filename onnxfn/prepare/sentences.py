"""Default sample sentences for validating a text-embedding model when no --samples file is given:
short and long, questions, numbers, code, non-English text and near-duplicates."""

SENTENCES = [
    "Where is the nearest train station?",
    "How do I reset my password?",
    "The invoice was paid on the 3rd of March, 2024.",
    "Lambda functions bill per millisecond of execution.",
    "A quick brown fox jumps over the lazy dog.",
    "The quick brown fox jumped over a lazy dog.",
    "Machine learning models can be quantized to eight-bit integers.",
    "She plays the violin in the city orchestra every Friday evening.",
    "Please turn off the lights when you leave the room.",
    "Ok",
    "?",
    "Thanks!",
    "def add(a, b): return a + b",
    "SELECT name, email FROM users WHERE active = 1;",
    "The temperature dropped to -12 °C overnight.",
    "Le chat dort sur le canapé.",
    "Der Zug nach Berlin hat zehn Minuten Verspätung.",
    "El mercado abre a las ocho de la mañana.",
    "東京は日本の首都です。",
    "Погода сегодня хорошая.",
    "I love this product 😀 it works great",
    "Terrible service, I will never order again.",
    "The package arrived damaged and two days late.",
    "Our quarterly revenue grew by 14 percent year over year.",
    "Photosynthesis converts light energy into chemical energy.",
    "The mitochondria is the powerhouse of the cell.",
    "Can you recommend a good book about the history of Rome?",
    "What time does the pharmacy close on Sundays?",
    "Mount Everest is the highest mountain above sea level.",
    "The committee postponed its decision until next month.",
    "Add two cups of flour and a pinch of salt, then stir.",
    "The patient reported mild headaches and fatigue.",
    "Interest rates are expected to remain unchanged this quarter.",
    "He scored the winning goal in the final minute of the match.",
    "The new policy takes effect on January first.",
    "Children under twelve must be accompanied by an adult.",
    "Restart the server and check the logs for errors.",
    "Error 503: the service is temporarily unavailable.",
    "The museum's collection includes over ten thousand paintings.",
    "A gentle breeze moved through the tall grass of the meadow.",
    (
        "In a long report about climate, the authors describe how rising temperatures, shifting rainfall "
        "patterns and more frequent extreme events affect agriculture, water supply, public health and "
        "infrastructure across many regions, and they compare dozens of models to estimate the range of "
        "outcomes under different emission scenarios over the coming decades."
    ),
    (
        "The contract states that either party may terminate the agreement with thirty days written notice, "
        "that all outstanding invoices become due immediately upon termination, and that confidential "
        "information must be returned or destroyed within fourteen days."
    ),
    "Dogs are loyal companions.",
    "Cats are independent pets.",
    "The stock fell five percent after the earnings call.",
    "Shares dropped sharply following the quarterly report.",
    "Turn left at the second traffic light.",
    "The meeting has been moved to 3 pm.",
]
