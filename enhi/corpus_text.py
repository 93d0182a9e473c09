"""Sentences for the offline English + Hindi demo corpus, written for this project.

Two sources per language: a few hundred short hand-written everyday sentences, and templates with slot
words drawn from the same vocabulary, so that many distinct sentences can be composed while validation
sentences still share words with training ones (the demo models are tiny and must be able to learn).

`sentence_pool` mixes both into a deterministic list of distinct sentences; `normalize_text` turns a
sentence into its transcript (English: lowercase letters, apostrophes, spaces; Hindi: NFC Devanagari,
no punctuation).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Iterator

LANGS = ("en", "hi")
MIN_WORDS, MAX_WORDS = 3, 9

# ---------------------------------------------------------------------------------------------------------
# English: hand-written sentences. Written with ordinary punctuation so eSpeak gets natural prosody; no
# digits or abbreviations, because their spoken form would not match the normalized transcript.
EN_SENTENCES: tuple[str, ...] = tuple(
    line.strip()
    for line in """
The kettle is on the stove.
Please turn off the kitchen light.
My room is on the second floor.
The cat is sleeping under the bed.
We need some milk and bread.
Who left the door open?
The garden looks lovely in the spring.
I cleaned the windows this morning.
The tap in the bathroom is leaking.
Let's paint the walls light blue.
There is a spider on the ceiling.
My brother is washing the dishes.
Dinner will be ready in ten minutes.
Put the plates back in the cupboard.
The baby is finally asleep.
The new sofa is very comfortable.
Can you fold the clean clothes?
The fridge is almost empty.
I can't find the remote.
Grandma is watering the plants.
I would like a cup of tea.
This soup is too salty.
She makes the best lemon cake.
Do you want rice or bread?
The mangoes are sweet this year.
We had fish for dinner last night.
Please pass me the salt.
My father loves spicy food.
The coffee is still hot.
I'm not hungry right now.
Let's order some pizza tonight.
The bananas are getting brown.
He drinks warm milk before bed.
There is no sugar in my tea.
She cut the apple into four pieces.
The bread smells wonderful.
Breakfast is the most important meal.
We ate lunch under a big tree.
I'll cook lentils and rice today.
These biscuits are very crunchy.
Mother made potato pancakes for breakfast.
The hot samosas are delicious.
The bus is late again today.
The train leaves at six.
We missed the last bus home.
How far is the railway station?
The airport is very crowded.
I usually walk to work.
The taxi driver was very kind.
Turn left at the next corner.
The road is closed for repairs.
Our flight was delayed by two hours.
She rides her bicycle to school.
Is this seat taken?
We're stuck in heavy traffic.
The ticket costs fifty rupees.
Let's take the metro instead.
My car won't start this morning.
The bridge is near the old temple.
They are waiting at the bus stop.
We reached the village before sunset.
Please drive slowly on this road.
It's raining heavily outside.
The sky is clear tonight.
It's very hot in the afternoon.
Take an umbrella with you.
The wind is blowing hard.
Winter mornings are very foggy.
The river is full after the rain.
It might snow in the mountains.
The weather is pleasant today.
We sat in the sun for an hour.
A storm is coming from the east.
The leaves are falling from the trees.
Summer holidays start next week.
The night was cold and quiet.
There was thunder all night.
The meeting starts after lunch.
I have to finish this report.
The teacher gave us homework.
My exam is on Monday.
She works at the city hospital.
He is a doctor in the village.
The office is closed on Sunday.
Please send me the file.
Our team won the match.
I forgot my pen at home.
The library opens at ten.
The students are reading quietly.
My boss is very patient.
We need a new printer.
He is learning to play the guitar.
The class was cancelled today.
Can you explain this question again?
I'm working from home this week.
The children love their new teacher.
She writes beautiful stories.
How much does this shirt cost?
The market is busy on Saturdays.
I bought fresh vegetables today.
This shop sells cheap shoes.
Do you have a smaller size?
The price of onions went up.
I paid with my card.
Keep the change, please.
The mall is full of people.
She bought a red dress.
We need to buy a new kettle.
The bank is next to the post office.
I lost my wallet yesterday.
This phone is too expensive.
They sell fruit near the station.
My sister lives in Delhi.
My grandfather tells funny stories.
She is very happy today.
He looks tired after work.
My friend is coming to visit.
We are going to a wedding.
They have two little boys.
His mother is a nurse.
I miss my old friends.
She laughed at my joke.
He is always on time.
My uncle has a small farm.
Our neighbours are very friendly.
The baby smiled at me.
I'm sorry I'm late.
Thank you for your help.
Nice to meet you.
Happy birthday to you.
See you tomorrow morning.
Good night and sleep well.
What time is it now?
Where is the nearest hospital?
Why are you so quiet today?
When does the film start?
Who is knocking at the door?
Which bus goes to the market?
How was your trip?
Can I borrow your book?
Do you speak English?
Are you coming with us?
What did you eat for lunch?
Where do you work?
How old is your son?
Did you call your mother?
Is the shop open today?
Have you seen my glasses?
What is your favourite colour?
Could you repeat that, please?
Would you like some water?
How do you make this chutney?
I have a bad headache.
Drink plenty of water every day.
The doctor told me to rest.
He broke his arm playing football.
She goes for a walk every morning.
Take this medicine twice a day.
My tooth has been hurting.
Wash your hands before eating.
I caught a cold last week.
Exercise keeps you healthy.
He feels much better now.
The clinic is open until eight.
The dog is barking at the gate.
Birds are singing in the trees.
The cow is eating green grass.
A monkey stole my banana.
The flowers smell very sweet.
There are fish in the pond.
The horse runs very fast.
We saw a peacock in the field.
The moon is bright tonight.
The mountains are covered in snow.
The lake is calm this morning.
The ants are carrying crumbs.
The parrot can say hello.
The farmer is planting wheat.
The tree in our yard is very old.
We play cricket every evening.
She is reading a new novel.
Let's watch a film tonight.
I wake up at six every day.
He is listening to music.
They went swimming in the lake.
My phone battery is low.
Please call me after dinner.
I'll be back in five minutes.
We sang songs around the fire.
The party was a lot of fun.
I need to charge my laptop.
She is painting a picture.
The game starts at seven.
He plays the flute beautifully.
They are dancing at the fair.
I write in my diary every night.
Let's go for a walk.
We are cleaning the house today.
I'm learning to cook.
The light bulb is broken.
Open the window a little.
This box is very heavy.
The water is too cold.
The room smells of flowers.
The clock on the wall stopped.
Her voice is very soft.
The door makes a strange noise.
The stairs are slippery.
This chair is too small for me.
My shoes are wet from the rain.
The letter arrived this morning.
The film was very long.
That was a great idea.
The music is too loud.
The street lights are on.
The newspaper is on the table.
I left my bag in the car.
This road leads to the lake.
The key is under the mat.
My sister is a good singer.
The baby is crying again.
The curry needs more salt.
He always forgets my name.
We waited for an hour.
Please speak a little louder.
The shop closes at eight tonight.
This is my favourite song.
Our house has a red door.
I'd like to sit by the window.
The streets are empty at night.
The cake is in the oven.
She's wearing a yellow scarf.
Let me carry that for you.
They moved to a new city.
He's reading the morning paper.
The kids are doing their homework.
We planted roses in the garden.
The milk has gone sour.
Turn the music down, please.
The hotel room was very clean.
My bag is full of books.
The potatoes are boiling.
I'll meet you at the gate.
She answered every question correctly.
There's a long queue at the bank.
He fixed the fan himself.
The boat is crossing the river.
The old man sits on the bench.
I like the smell of rain.
""".strip().splitlines()
)

# ---------------------------------------------------------------------------------------------------------
# Hindi: hand-written sentences, everyday register, Devanagari. Danda and question marks are kept here for
# prosody and stripped from transcripts by `normalize_text`.
HI_SENTENCES: tuple[str, ...] = tuple(
    line.strip()
    for line in """
केतली चूल्हे पर रखी है।
कृपया रसोई की बत्ती बंद कर दो।
मेरा कमरा दूसरी मंज़िल पर है।
बिल्ली बिस्तर के नीचे सो रही है।
हमें थोड़ा दूध और रोटी चाहिए।
दरवाज़ा किसने खुला छोड़ा?
बसंत में बगीचा बहुत सुंदर लगता है।
मैंने आज सुबह खिड़कियाँ साफ़ कीं।
बाथरूम का नल टपक रहा है।
चलो दीवारों को हल्का नीला रंग दें।
छत पर एक मकड़ी है।
मेरा भाई बर्तन धो रहा है।
खाना दस मिनट में तैयार हो जाएगा।
थालियाँ वापस अलमारी में रख दो।
बच्चा आख़िरकार सो गया।
नया सोफ़ा बहुत आरामदायक है।
क्या तुम साफ़ कपड़े तह कर सकते हो?
फ़्रिज लगभग खाली है।
मुझे रिमोट नहीं मिल रहा।
दादी पौधों को पानी दे रही हैं।
मुझे एक कप चाय चाहिए।
यह सूप बहुत नमकीन है।
वह सबसे अच्छा नींबू केक बनाती है।
तुम्हें चावल चाहिए या रोटी?
इस साल आम बहुत मीठे हैं।
कल रात हमने खाने में मछली खाई।
कृपया मुझे नमक दीजिए।
मेरे पिताजी को तीखा खाना पसंद है।
कॉफ़ी अभी भी गरम है।
मुझे अभी भूख नहीं है।
चलो आज रात पिज़्ज़ा मँगाते हैं।
केले भूरे हो रहे हैं।
वह सोने से पहले गरम दूध पीता है।
मेरी चाय में चीनी नहीं है।
उसने सेब के चार टुकड़े किए।
रोटी की ख़ुशबू बहुत अच्छी है।
सुबह का नाश्ता सबसे ज़रूरी है।
हमने एक बड़े पेड़ के नीचे खाना खाया।
आज मैं दाल चावल बनाऊँगी।
ये बिस्कुट बहुत कुरकुरे हैं।
माँ ने आलू के पराठे बनाए।
गरम समोसे बहुत स्वादिष्ट हैं।
आज बस फिर से देर से आई।
ट्रेन छह बजे निकलती है।
हमारी आख़िरी बस छूट गई।
रेलवे स्टेशन कितनी दूर है?
हवाई अड्डे पर बहुत भीड़ है।
मैं आमतौर पर पैदल दफ़्तर जाता हूँ।
टैक्सी वाला बहुत भला था।
अगले मोड़ पर बाएँ मुड़िए।
मरम्मत के कारण सड़क बंद है।
हमारी उड़ान दो घंटे देर से थी।
वह साइकिल से स्कूल जाती है।
क्या यह सीट खाली है?
हम भारी ट्रैफ़िक में फँसे हैं।
टिकट पचास रुपये का है।
चलो मेट्रो से चलते हैं।
आज सुबह मेरी गाड़ी चालू नहीं हुई।
पुल पुराने मंदिर के पास है।
वे बस स्टॉप पर इंतज़ार कर रहे हैं।
हम सूरज ढलने से पहले गाँव पहुँच गए।
इस सड़क पर धीरे चलाइए।
बाहर तेज़ बारिश हो रही है।
आज रात आसमान साफ़ है।
दोपहर में बहुत गर्मी होती है।
अपने साथ छाता ले जाओ।
हवा बहुत तेज़ चल रही है।
सर्दियों की सुबह बहुत कोहरा होता है।
बारिश के बाद नदी भर गई है।
पहाड़ों में बर्फ़ गिर सकती है।
आज मौसम बहुत सुहाना है।
हम एक घंटे तक धूप में बैठे।
पूरब से तूफ़ान आ रहा है।
पेड़ों से पत्ते गिर रहे हैं।
गर्मी की छुट्टियाँ अगले हफ़्ते से शुरू हैं।
रात ठंडी और शांत थी।
पूरी रात बादल गरजते रहे।
बैठक दोपहर के खाने के बाद शुरू होगी।
मुझे यह रिपोर्ट पूरी करनी है।
शिक्षक ने हमें गृहकार्य दिया।
मेरी परीक्षा सोमवार को है।
वह शहर के अस्पताल में काम करती है।
वह गाँव में डॉक्टर है।
दफ़्तर रविवार को बंद रहता है।
कृपया मुझे फ़ाइल भेज दीजिए।
हमारी टीम मैच जीत गई।
मैं अपना पेन घर पर भूल गया।
पुस्तकालय दस बजे खुलता है।
छात्र चुपचाप पढ़ रहे हैं।
मेरे मालिक बहुत धैर्यवान हैं।
हमें नया प्रिंटर चाहिए।
वह गिटार बजाना सीख रहा है।
आज की कक्षा रद्द हो गई।
क्या आप यह सवाल फिर से समझा सकते हैं?
मैं इस हफ़्ते घर से काम कर रहा हूँ।
बच्चों को अपनी नई शिक्षिका बहुत पसंद है।
वह सुंदर कहानियाँ लिखती है।
इस कमीज़ की कीमत कितनी है?
शनिवार को बाज़ार में बहुत भीड़ होती है।
मैंने आज ताज़ी सब्ज़ियाँ ख़रीदीं।
यह दुकान सस्ते जूते बेचती है।
क्या आपके पास छोटा नाप है?
प्याज़ के दाम बढ़ गए हैं।
मैंने कार्ड से पैसे दिए।
बाकी पैसे आप रख लीजिए।
मॉल लोगों से भरा हुआ है।
उसने एक लाल पोशाक ख़रीदी।
हमें नई केतली ख़रीदनी है।
बैंक डाकघर के बगल में है।
कल मेरा बटुआ खो गया।
यह फ़ोन बहुत महँगा है।
स्टेशन के पास फल मिलते हैं।
मेरी बहन दिल्ली में रहती है।
मेरे दादाजी मज़ेदार कहानियाँ सुनाते हैं।
वह आज बहुत ख़ुश है।
वह काम के बाद थका हुआ लगता है।
मेरा दोस्त मिलने आ रहा है।
हम एक शादी में जा रहे हैं।
उनके दो छोटे बेटे हैं।
उसकी माँ नर्स हैं।
मुझे अपने पुराने दोस्तों की याद आती है।
वह मेरे चुटकुले पर हँस पड़ी।
वह हमेशा समय पर आता है।
मेरे चाचा का एक छोटा सा खेत है।
हमारे पड़ोसी बहुत मिलनसार हैं।
बच्चा मुझे देखकर मुस्कुराया।
माफ़ कीजिए, मुझे देर हो गई।
आपकी मदद के लिए धन्यवाद।
आपसे मिलकर ख़ुशी हुई।
जन्मदिन की बहुत बधाई हो।
कल सुबह मिलते हैं।
शुभ रात्रि, अच्छे से सोना।
अभी कितने बजे हैं?
सबसे पास का अस्पताल कहाँ है?
आज तुम इतने चुप क्यों हो?
फ़िल्म कब शुरू होगी?
दरवाज़े पर कौन खटखटा रहा है?
कौन सी बस बाज़ार जाती है?
तुम्हारी यात्रा कैसी रही?
क्या मैं तुम्हारी किताब ले सकता हूँ?
क्या आप हिंदी बोलते हैं?
क्या तुम हमारे साथ चल रहे हो?
तुमने दोपहर में क्या खाया?
आप कहाँ काम करते हैं?
आपका बेटा कितने साल का है?
क्या तुमने अपनी माँ को फ़ोन किया?
क्या आज दुकान खुली है?
क्या तुमने मेरा चश्मा देखा?
तुम्हारा पसंदीदा रंग कौन सा है?
क्या आप फिर से बोल सकते हैं?
क्या आप थोड़ा पानी लेंगे?
यह चटनी कैसे बनाते हैं?
मेरे सिर में बहुत दर्द है।
रोज़ ख़ूब पानी पिया करो।
डॉक्टर ने मुझे आराम करने को कहा।
फ़ुटबॉल खेलते समय उसका हाथ टूट गया।
वह हर सुबह सैर करने जाती है।
यह दवा दिन में दो बार लीजिए।
मेरे दाँत में दर्द हो रहा है।
खाने से पहले हाथ धो लो।
पिछले हफ़्ते मुझे ज़ुकाम हो गया था।
कसरत से शरीर स्वस्थ रहता है।
अब वह बहुत बेहतर महसूस कर रहा है।
दवाखाना आठ बजे तक खुला है।
कुत्ता दरवाज़े पर भौंक रहा है।
पेड़ों पर चिड़ियाँ गा रही हैं।
गाय हरी घास खा रही है।
एक बंदर मेरा केला ले भागा।
फूलों की ख़ुशबू बहुत मीठी है।
तालाब में मछलियाँ हैं।
घोड़ा बहुत तेज़ दौड़ता है।
हमने खेत में एक मोर देखा।
आज रात चाँद बहुत चमक रहा है।
पहाड़ बर्फ़ से ढके हुए हैं।
आज सुबह झील शांत है।
चींटियाँ दाने ले जा रही हैं।
तोता नमस्ते बोल सकता है।
किसान गेहूँ बो रहा है।
हमारे आँगन का पेड़ बहुत पुराना है।
हम हर शाम क्रिकेट खेलते हैं।
वह एक नया उपन्यास पढ़ रही है।
चलो आज रात फ़िल्म देखते हैं।
मैं रोज़ छह बजे उठता हूँ।
वह संगीत सुन रहा है।
वे झील में तैरने गए।
मेरे फ़ोन की बैटरी कम है।
खाने के बाद मुझे फ़ोन करना।
मैं पाँच मिनट में वापस आऊँगा।
हमने आग के चारों ओर गाने गाए।
पार्टी में बहुत मज़ा आया।
मुझे अपना लैपटॉप चार्ज करना है।
वह एक तस्वीर बना रही है।
खेल सात बजे शुरू होगा।
वह बहुत सुंदर बाँसुरी बजाता है।
वे मेले में नाच रहे हैं।
मैं हर रात डायरी लिखता हूँ।
चलो टहलने चलते हैं।
आज हम घर की सफ़ाई कर रहे हैं।
मैं खाना बनाना सीख रहा हूँ।
बल्ब फ़्यूज़ हो गया है।
खिड़की थोड़ी सी खोल दो।
यह डिब्बा बहुत भारी है।
पानी बहुत ठंडा है।
कमरे में फूलों की ख़ुशबू है।
दीवार की घड़ी बंद हो गई।
उसकी आवाज़ बहुत मीठी है।
दरवाज़े से अजीब आवाज़ आती है।
सीढ़ियाँ फिसलन भरी हैं।
यह कुर्सी मेरे लिए बहुत छोटी है।
बारिश से मेरे जूते गीले हो गए।
चिट्ठी आज सुबह आई।
फ़िल्म बहुत लंबी थी।
यह बहुत अच्छा विचार था।
संगीत बहुत तेज़ है।
सड़क की बत्तियाँ जल गई हैं।
अख़बार मेज़ पर रखा है।
मैंने अपना थैला गाड़ी में छोड़ दिया।
यह सड़क झील तक जाती है।
चाबी पायदान के नीचे है।
मेरी बहन बहुत अच्छा गाती है।
बच्चा फिर से रो रहा है।
सब्ज़ी में थोड़ा और नमक डालो।
वह हमेशा मेरा नाम भूल जाता है।
हमने एक घंटे तक इंतज़ार किया।
कृपया थोड़ा ज़ोर से बोलिए।
दुकान आज रात आठ बजे बंद होगी।
यह मेरा पसंदीदा गाना है।
हमारे घर का दरवाज़ा लाल है।
मैं खिड़की के पास बैठना चाहता हूँ।
रात को गलियाँ सूनी रहती हैं।
केक ओवन में रखा है।
उसने पीला दुपट्टा पहना है।
लाओ, मैं यह उठा लेता हूँ।
वे एक नए शहर में चले गए।
वह सुबह का अख़बार पढ़ रहे हैं।
बच्चे अपना गृहकार्य कर रहे हैं।
हमने बगीचे में गुलाब लगाए।
दूध खट्टा हो गया है।
कृपया गाना धीमा कर दो।
होटल का कमरा बहुत साफ़ था।
मेरा थैला किताबों से भरा है।
आलू उबल रहे हैं।
मैं तुमसे दरवाज़े पर मिलूँगा।
उसने हर सवाल का सही जवाब दिया।
बैंक में लंबी कतार लगी है।
उसने पंखा ख़ुद ठीक किया।
नाव नदी पार कर रही है।
बूढ़े बाबा बेंच पर बैठे हैं।
मुझे बारिश की ख़ुशबू अच्छी लगती है।
""".strip().splitlines()
)


# ---------------------------------------------------------------------------------------------------------
# Templates. Each returns one sentence built from slot words; the words deliberately repeat the hand-written
# vocabulary. Hindi slots carry grammatical gender where the verb or adjective must agree.
def _pick(rng: random.Random, words: tuple[str, ...] | list[str]) -> str:
    return words[rng.randrange(len(words))]


_EN_PEOPLE = ("my brother", "my sister", "my mother", "my father", "our teacher", "the old man",
              "the little girl", "my friend", "grandma", "the doctor", "our neighbour", "my uncle")
_EN_PLACES = ("market", "station", "hospital", "temple", "bank", "school", "office", "park", "post office",
              "village", "library", "river")
_EN_OBJECT_ACTIONS = ("open the door", "close the door", "open the window", "close the window",
                      "turn on the light", "turn off the light", "turn on the fan", "turn off the fan",
                      "bring the bag", "carry the box", "move the chair", "wash the cups", "wash the plates",
                      "wash the clothes", "bring some water", "warm up the food", "put the book back",
                      "turn off the television", "clean the table", "feed the cat")
_EN_WHEN = ("now", "quickly", "before dinner", "after lunch", "for me", "tonight", "right away",
            "before you leave", "this evening", "in the morning")
_EN_FUTURE_TIMES = ("tomorrow", "tonight", "on Sunday", "next week", "this evening", "after lunch",
                    "in the morning", "on Monday", "on Saturday")
_EN_PAST_TIMES = ("yesterday", "last week", "this morning", "on Sunday", "last night", "two days ago",
                  "on Monday", "last month")
_EN_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _en_thing_place(rng: random.Random) -> str:
    adj = _pick(rng, ("red", "blue", "green", "small", "big", "old", "new", "heavy", "clean", "broken"))
    thing = _pick(rng, ("cup", "book", "box", "bag", "chair", "lamp", "bottle", "plate", "key", "phone",
                        "basket", "pillow"))
    loc = _pick(rng, ("on the table", "under the bed", "near the door", "in the kitchen", "on the shelf",
                      "in the car", "behind the sofa", "next to the window"))
    return f"The {adj} {thing} is {loc}."


def _en_likes(rng: random.Random) -> str:
    verb = _pick(rng, ("likes", "loves", "wants", "does not like"))
    food = _pick(rng, ("hot tea", "cold milk", "sweet mangoes", "spicy curry", "fresh bread", "rice and lentils",
                       "lemon cake", "green apples", "boiled eggs", "potato soup", "hot samosas", "coffee"))
    return f"{_pick(rng, _EN_PEOPLE)} {verb} {food}."


def _en_future(rng: random.Random) -> str:
    subj = _pick(rng, ("We", "They", "I", "My friends"))
    act = _pick(rng, ("go to the market", "visit the temple", "go to the station", "walk to the river",
                      "go to the park", "visit our grandparents", "go to the library", "clean the house",
                      "go to school", "play cricket", "cook dinner", "call the doctor"))
    return f"{subj} will {act} {_pick(rng, _EN_FUTURE_TIMES)}."


def _en_please(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"Please {_pick(rng, _EN_OBJECT_ACTIONS)} {_pick(rng, _EN_WHEN)}."
    return f"Can you {_pick(rng, _EN_OBJECT_ACTIONS)} {_pick(rng, _EN_WHEN)}?"


def _en_went(rng: random.Random) -> str:
    return f"{_pick(rng, _EN_PEOPLE)} went to the {_pick(rng, _EN_PLACES)} {_pick(rng, _EN_PAST_TIMES)}."


def _en_count(rng: random.Random) -> str:
    things = _pick(rng, ("chairs", "books", "cups", "windows", "lamps", "plates", "boxes", "pictures", "cats",
                         "children", "bottles", "pillows"))
    room = _pick(rng, ("kitchen", "garden", "bedroom", "classroom", "office", "hall", "shop", "car"))
    return f"There are {_pick(rng, _EN_NUMBERS)} {things} in the {room}."


def _en_weather(rng: random.Random) -> str:
    time = _pick(rng, ("Yesterday", "Last night", "This morning", "Last week", "On Sunday", "Today"))
    weather = _pick(rng, ("hot", "cold", "windy", "cloudy", "foggy", "rainy", "pleasant", "quiet", "sunny"))
    verb = "is" if time == "Today" else "was"
    return f"{time} it {verb} very {weather}."


def _en_need(rng: random.Random) -> str:
    subj = _pick(rng, ("I", "We", "You"))
    act = _pick(rng, ("go to the bank", "buy some vegetables", "finish my homework", "call my mother",
                      "clean the kitchen", "catch the train", "see the doctor", "charge my phone",
                      "write a letter", "fix the fan"))
    return f"{subj} have to {act} {_pick(rng, _EN_FUTURE_TIMES)}."


_EN_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _en_thing_place, _en_likes, _en_future, _en_please, _en_went, _en_count, _en_weather, _en_need)

# Hindi slot words: (masculine form, feminine form) for inflecting adjectives; nouns carry "m"/"f".
_HI_ADJS = (("लाल", "लाल"), ("नीला", "नीली"), ("हरा", "हरी"), ("छोटा", "छोटी"), ("बड़ा", "बड़ी"),
            ("पुराना", "पुरानी"), ("नया", "नई"), ("भारी", "भारी"), ("साफ़", "साफ़"), ("काला", "काली"))
_HI_THINGS = (("कप", "m"), ("किताब", "f"), ("डिब्बा", "m"), ("थैला", "m"), ("कुर्सी", "f"), ("बोतल", "f"),
              ("थाली", "f"), ("चाबी", "f"), ("फ़ोन", "m"), ("टोकरी", "f"), ("तकिया", "m"), ("लैंप", "m"))
_HI_LOCS = ("मेज़ पर", "बिस्तर के नीचे", "दरवाज़े के पास", "रसोई में", "अलमारी में", "गाड़ी में",
            "सोफ़े के पीछे", "खिड़की के पास")
_HI_PEOPLE_OBL = ("मेरे भाई", "मेरी बहन", "मेरी माँ", "मेरे पिताजी", "हमारे शिक्षक", "उस बूढ़े आदमी",
                  "छोटी लड़की", "मेरे दोस्त", "दादी", "डॉक्टर साहब", "हमारे पड़ोसी", "मेरे चाचा")
_HI_PLACES = ("बाज़ार", "स्टेशन", "अस्पताल", "मंदिर", "बैंक", "स्कूल", "दफ़्तर", "पार्क", "डाकघर", "गाँव",
              "पुस्तकालय", "सिनेमाघर")
_HI_FUTURE_TIMES = ("कल", "आज रात", "रविवार को", "अगले हफ़्ते", "आज शाम", "दोपहर के खाने के बाद", "सुबह",
                    "सोमवार को", "शनिवार को")
_HI_PAST_TIMES = ("कल", "पिछले हफ़्ते", "आज सुबह", "रविवार को", "कल रात", "दो दिन पहले", "सोमवार को",
                  "पिछले महीने")
_HI_NUMBERS = ("दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ", "दस")


def _hi_thing_place(rng: random.Random) -> str:
    thing, gender = _pick(rng, _HI_THINGS)
    adj_m, adj_f = _pick(rng, _HI_ADJS)
    adj, placed = (adj_m, "रखा") if gender == "m" else (adj_f, "रखी")
    return f"{adj} {thing} {_pick(rng, _HI_LOCS)} {placed} है।"


def _hi_likes(rng: random.Random) -> str:
    food = _pick(rng, ("गरम चाय", "ठंडा दूध", "मीठा आम", "तीखी सब्ज़ी", "ताज़ी रोटी", "दाल चावल", "नींबू का केक",
                       "हरा सेब", "उबला अंडा", "आलू का सूप", "गरम समोसा", "कॉफ़ी"))
    verb = _pick(rng, ("पसंद है", "पसंद नहीं है", "चाहिए", "बहुत पसंद है"))
    return f"{_pick(rng, _HI_PEOPLE_OBL)} को {food} {verb}।"


def _hi_future(rng: random.Random) -> str:
    # Plural/honorific subjects only, so the -एँगे verb forms always agree.
    subj = _pick(rng, ("हम", "वे", "मेरे दोस्त", "हम सब"))
    act = _pick(rng, ("बाज़ार जाएँगे", "मंदिर जाएँगे", "स्टेशन जाएँगे", "नदी तक घूमने जाएँगे", "पार्क जाएँगे",
                      "दादा दादी से मिलेंगे", "पुस्तकालय जाएँगे", "घर साफ़ करेंगे", "स्कूल जाएँगे",
                      "क्रिकेट खेलेंगे", "खाना बनाएँगे", "डॉक्टर को बुलाएँगे"))
    return f"{subj} {_pick(rng, _HI_FUTURE_TIMES)} {act}।"


def _hi_please(rng: random.Random) -> str:
    when = _pick(rng, ("अभी", "जल्दी से", "खाने से पहले", "दोपहर के बाद", "मेरे लिए", "आज रात", "तुरंत",
                       "जाने से पहले", "आज शाम", "सुबह"))
    act = _pick(rng, ("दरवाज़ा खोलिए", "दरवाज़ा बंद कीजिए", "खिड़की खोलिए", "खिड़की बंद कीजिए", "बत्ती जलाइए",
                      "बत्ती बुझाइए", "पंखा चलाइए", "पंखा बंद कीजिए", "थैला ले आइए", "डिब्बा उठाइए",
                      "कुर्सी यहाँ रखिए", "कप धो दीजिए", "थालियाँ धो दीजिए", "कपड़े धो दीजिए", "पानी ले आइए",
                      "खाना गरम कीजिए", "किताब वापस रखिए", "टीवी बंद कीजिए", "मेज़ साफ़ कीजिए",
                      "बिल्ली को खाना दीजिए"))
    return f"कृपया {when} {act}।" if rng.random() < 0.5 else f"{when} {act}।"


def _hi_went(rng: random.Random) -> str:
    subj = _pick(rng, ("हम", "वे", "मेरे पिताजी", "मेरे दोस्त", "दादाजी", "हमारे पड़ोसी", "मेरे भैया",
                       "शिक्षक जी", "मेरे चाचा"))
    return f"{subj} {_pick(rng, _HI_PAST_TIMES)} {_pick(rng, _HI_PLACES)} गए थे।"


def _hi_count(rng: random.Random) -> str:
    room = _pick(rng, ("रसोई", "बगीचे", "कमरे", "कक्षा", "दफ़्तर", "हॉल", "दुकान", "गाड़ी"))
    things = _pick(rng, ("कुर्सियाँ", "किताबें", "कप", "खिड़कियाँ", "लैंप", "थालियाँ", "डिब्बे", "तस्वीरें",
                         "बिल्लियाँ", "बच्चे", "बोतलें", "तकिये"))
    return f"{room} में {_pick(rng, _HI_NUMBERS)} {things} हैं।"


def _hi_weather(rng: random.Random) -> str:
    time = _pick(rng, ("कल", "कल रात", "आज सुबह", "पिछले हफ़्ते", "रविवार को", "आज"))
    weather = _pick(rng, ("गरम", "ठंडा", "सुहाना", "खराब", "अच्छा", "साफ़"))
    verb = "है" if time == "आज" else "था"
    return f"{time} मौसम बहुत {weather} {verb}।"


def _hi_need(rng: random.Random) -> str:
    act = _pick(rng, ("बैंक जाना", "दूध लाना", "गृहकार्य पूरा करना", "माँ को फ़ोन करना", "रसोई साफ़ करना",
                      "ट्रेन पकड़ना", "डॉक्टर को दिखाना", "फ़ोन चार्ज करना", "ख़त लिखना",
                      "पंखा ठीक करना"))
    subj = _pick(rng, ("मुझे", "हमें", "आपको"))
    return f"{subj} {_pick(rng, _HI_FUTURE_TIMES)} {act} है।"


_HI_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _hi_thing_place, _hi_likes, _hi_future, _hi_please, _hi_went, _hi_count, _hi_weather, _hi_need)


# ---------------------------------------------------------------------------------------------------------
_EN_KEEP = re.compile(r"[^a-z' ]+")
_DEVANAGARI = re.compile(r"[\u0900-\u097f ]+")


def normalize_text(text: str, lang: str) -> str:
    """Transcript form of `text`: what the ASR model is trained to output.

    English: lowercase ASCII letters, apostrophes and single spaces (other characters become spaces).
    Hindi: Unicode NFC, punctuation (danda included) removed, single spaces; raises ValueError if any
    non-Devanagari character remains, since that would leak Latin text into the Hindi vocabulary.
    """
    if lang == "en":
        text = text.lower().replace("\u2019", "'")
        text = _EN_KEEP.sub(" ", text)
        # Apostrophes only inside words ("don't"), never as quote marks.
        words = [w.strip("'") for w in text.split()]
        return " ".join(w for w in words if w)
    if lang == "hi":
        text = unicodedata.normalize("NFC", text)
        # Punctuation (P*), symbols (S*) and format controls (ZWJ/ZWNJ, Cf) are not spoken.
        text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text
                       if unicodedata.category(c) != "Cf")
        text = " ".join(text.split())
        if text and not _DEVANAGARI.fullmatch(text):
            bad = sorted({c for c in text if not _DEVANAGARI.fullmatch(c)})
            raise ValueError(f"non-Devanagari characters {bad} in Hindi text {text!r}")
        return text
    raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")


def _templated(lang: str, rng: random.Random) -> Iterator[str]:
    templates = _EN_TEMPLATES if lang == "en" else _HI_TEMPLATES
    while True:
        s = templates[rng.randrange(len(templates))](rng)
        yield s[0].upper() + s[1:] if lang == "en" else s


def sentence_pool(lang: str, n: int, seed: int = 0) -> list[str]:
    """Return `n` sentences (raw, for synthesis) whose normalized transcripts are all distinct.

    Deterministic in (lang, n, seed), and a prefix of the list for a larger `n` with the same seed, so
    callers can take the first k for one split and the next ones for another and get disjoint sets.
    Hand-written and templated sentences alternate until the hand-written ones run out.
    Raises ValueError if the sources cannot supply `n` distinct sentences.
    """
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    rng = random.Random(f"{lang}:{seed}")
    fixed = list(EN_SENTENCES if lang == "en" else HI_SENTENCES)
    rng.shuffle(fixed)
    generated = _templated(lang, rng)
    out: list[str] = []
    seen: set[str] = set()
    misses = 0
    # Templates start repeating as the pool fills up; give up only after many misses in a row.
    while len(out) < n and misses < 20_000:
        source_fixed = bool(fixed) and len(out) % 2 == 0
        s = fixed.pop() if source_fixed else next(generated)
        key = normalize_text(s, lang)
        if key in seen or not MIN_WORDS <= len(key.split()) <= MAX_WORDS:
            misses += 0 if source_fixed else 1
            continue
        misses = 0
        seen.add(key)
        out.append(s)
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct {lang} sentences available, {n} requested")
    return out


def split_sentences(lang: str, n_train: int, n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Pick disjoint train and validation sentences (raw text) for one language.

    Train takes the first `n_train` of `sentence_pool`. Validation is chosen from the sentences after it,
    preferring those whose words all occur in the training transcripts (fewest unseen words first), so a
    tiny model trained on this data can be judged on new sentences without being asked for new words.
    """
    n_candidates = max(10 * n_val, 200)
    pool = sentence_pool(lang, n_train + n_candidates, seed)
    train, candidates = pool[:n_train], pool[n_train:]
    vocab = {w for s in train for w in normalize_text(s, lang).split()}

    def unseen(s: str) -> int:
        return sum(w not in vocab for w in normalize_text(s, lang).split())

    # sorted() is stable, so ties keep pool order and the choice stays deterministic.
    val = sorted(candidates, key=unseen)[:n_val]
    return train, val
